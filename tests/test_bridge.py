"""`tether bridge` in front of a real Tether server on the tiny model: its wire format as
the Godot addon speaks it, bad input, the viewer page in headless Chromium.

Godot 4 cannot run here, so frames are built the way clients/godot/addons/tether/
tether_live.gd builds them (u32s written at fixed offsets into a zeroed header, buffers
appended), and a test holds the addon's constants to the bridge's.

The viewer test needs `chromium`: the fixture runs clients/godot/setup_test_env.sh
(idempotent; `make hosts` runs it too), which installs it from Debian's packages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tether
from conftest import ROOT, free_port
from PIL import Image
from tether import bridge
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(ROOT / "examples"))
from scene import render  # noqa: E402

GDSCRIPT = ROOT / "clients" / "godot" / "addons" / "tether" / "tether_live.gd"
SETUP_CHROMIUM = ROOT / "clients" / "godot" / "setup_test_env.sh"
SIZE = 64
FAR = 100.0

# What the addon sends: linear view depth with the far plane where there is no geometry,
# view-space normals with (0, 0, 1) there (its shader writes exactly that).
_depth, _normals = render(SIZE, SIZE)
DEPTH = np.where(np.isfinite(_depth), _depth, FAR).astype(np.float32)
NORMALS = np.where(np.isfinite(_depth)[..., None], _normals, [0.0, 0.0, 1.0]).astype(np.float32)

CONFIG = {
    "type": "config",
    "prompt": "a watercolour village",
    "controls": [
        {"model": "depth", "weight": 0.8, "preprocessor": {"type": "depth", "far": FAR}},
        {"model": "normal", "weight": 0.5, "preprocessor": {"type": "normal", "space": "view"}},
    ],
    "steps": 2,
    "strength": 0.5,
    "seed": 5,
    "output_format": "raw",
}
RECEIVE_TIMEOUT_S = 30


def colour(k: int) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


# --- frames as the GDScript builds them --------------------------------------------------

U8, F16, F32, ENCODED = 1, 2, 3, 0


def godot_frame(frame_id: int, buffers: list[tuple[int, int, int, int, bytes]]) -> bytes:
    """tether_live.gd's _pack_frame: buffers are (width, height, channels, pixel type,
    bytes); a zeroed 12 + 20N byte header gets its u32s at fixed offsets."""
    header = bytearray(12 + 20 * len(buffers))
    struct.pack_into("<I", header, 0, 0x31464C54)  # "TLF1"
    struct.pack_into("<I", header, 4, frame_id)
    struct.pack_into("<I", header, 8, len(buffers))
    for i, (width, height, channels, pixel_type, data) in enumerate(buffers):
        base = 12 + 20 * i
        for k, value in enumerate((width, height, channels, pixel_type, len(data))):
            struct.pack_into("<I", header, base + 4 * k, value)
    return bytes(header) + b"".join(buffer[4] for buffer in buffers)


def scene_frame(frame_id: int, image: np.ndarray | None = None) -> bytes:
    """Colour RGB8 + depth F32 x1 + normals F32 x3, as the addon captures them."""
    pixels = colour(frame_id) if image is None else image
    height, width = pixels.shape[:2]
    return godot_frame(
        frame_id,
        [
            (width, height, 3, U8, pixels.tobytes()),
            (width, height, 1, F32, DEPTH[:height, :width].astype("<f4").tobytes()),
            (width, height, 3, F32, NORMALS[:height, :width].astype("<f4").tobytes()),
        ],
    )


def read_result(message: bytes) -> dict:
    """The result header at the offsets the GDScript and the viewer page read."""
    (magic,) = struct.unpack_from("<I", message, 0)
    assert magic == 0x31524C54  # "TLR1"
    frame_id, fmt, width, height, dropped = struct.unpack_from("<5I", message, 4)
    latency_ms, lag_ms = struct.unpack_from("<2f", message, 24)
    flags, length = struct.unpack_from("<2I", message, 32)
    assert len(message) == 40 + length
    return {
        "frame_id": frame_id,
        "format": fmt,
        "width": width,
        "height": height,
        "dropped": dropped,
        "latency_ms": latency_ms,
        "lag_ms": lag_ms,
        "reused": bool(flags & 1),
        "data": message[40:],
    }


# --- a host and a bridge -----------------------------------------------------------------


class Host:
    """A WebSocket client speaking the host side of the protocol."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.ws = websocket

    def config(self, **changes: object) -> None:
        self.ws.send(json.dumps({**CONFIG, **changes}))

    def receive(self) -> dict:
        """The next message: a result (bytes -> its header fields) or a JSON message."""
        message = self.ws.recv(timeout=RECEIVE_TIMEOUT_S)
        return read_result(message) if isinstance(message, bytes) else json.loads(message)

    def result(self) -> dict:
        message = self.receive()
        assert "data" in message, f"expected a result, got {message}"
        return message

    def error(self) -> dict:
        message = self.receive()
        assert message.get("type") == "error", f"expected an error, got {message}"
        return message

    def process(self, frame_id: int, image: np.ndarray | None = None) -> dict:
        self.ws.send(scene_frame(frame_id, image))
        return self.result()


@pytest.fixture(scope="module")
def bridge_address(server: str) -> Iterator[str]:
    """A bridge started the way `tether bridge` starts it (add_arguments + main)."""
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"tether-bridge-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tether.bridge", "--server", server, "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while "tether bridge:" not in log.read_text():
        assert process.poll() is None, f"bridge exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"bridge not listening: {log.read_text()}"
        time.sleep(0.05)
    yield address
    process.terminate()
    assert process.wait(timeout=30) == 0, log.read_text()  # SIGTERM: a clean stop


def open_host(address: str) -> ClientConnection:
    return connect(f"ws://{address}/live", max_size=None)


@pytest.fixture
def host(bridge_address: str) -> Iterator[Host]:
    with open_host(bridge_address) as websocket:
        yield Host(websocket)


# --- the protocol ------------------------------------------------------------------------


def test_results_are_what_the_sdk_gets_for_the_same_frame(host: Host, server: str) -> None:
    host.config()
    first = host.process(1)
    assert first["frame_id"] == 1 and first["format"] == 4  # raw RGB8
    assert (first["width"], first["height"]) == (SIZE, SIZE)
    assert len(first["data"]) == SIZE * SIZE * 3 and not first["reused"]
    # The bridge's lag spans the server's latency: frame in -> result out, one hop wider.
    assert first["lag_ms"] >= first["latency_ms"] > 0

    # The same session config and frame straight through the SDK: the same pixels, so the
    # float buffers crossed the bridge bit for bit.
    config = bridge.config_from_json({k: v for k, v in CONFIG.items() if k != "type"})
    with tether.Client(server) as client, client.live(config) as session:
        session.send(tether.LiveFrame(1, colour(1), controls=[DEPTH, NORMALS]))
        session.close()
        (direct,) = list(session)
    assert direct.data == first["data"]


def test_control_buffers_reach_the_server_and_reuse_is_flagged(host: Host) -> None:
    """The tiny model's ControlNets start at zero (their output convolutions), so their
    buffers do not show in its images; the server's reuse check compares them instead."""
    host.config(reuse_threshold=0.001)
    image = colour(50)
    assert not host.process(1, image)["reused"]
    assert host.process(2, image)["reused"]  # the same colour, depth and normals
    flipped = godot_frame(
        3,
        [
            (SIZE, SIZE, 3, U8, image.tobytes()),
            (SIZE, SIZE, 1, F32, DEPTH[::-1].astype("<f4").tobytes()),  # upside down
            (SIZE, SIZE, 3, F32, NORMALS.astype("<f4").tobytes()),
        ],
    )
    host.ws.send(flipped)
    assert not host.result()["reused"]  # the server saw the new depth map


def test_frames_sent_faster_than_served(host: Host, bridge_address: str) -> None:
    with connect(f"ws://{bridge_address}/viewer", max_size=None) as viewer:
        host.config()
        sent = 20
        for frame_id in range(1, sent + 1):
            host.ws.send(scene_frame(frame_id))
        answered = []
        while not answered or answered[-1]["frame_id"] != sent:  # the newest is always served
            answered.append(host.result())
        ids = [result["frame_id"] for result in answered]
        assert ids == sorted(set(ids)) and set(ids) <= set(range(1, sent + 1))
        assert answered[-1]["dropped"] + len(answered) == sent
        # The viewer got the very same messages, in order; it may skip some (newest wins),
        # and its first may be the last result of an earlier test, shown on connect.
        seen = []
        while not seen or seen[-1] != answered[-1]:
            message = viewer.recv(timeout=RECEIVE_TIMEOUT_S)
            if isinstance(message, bytes):
                seen.append(read_result(message))
        if seen[0] not in answered:
            seen.pop(0)
        positions = [answered.index(result) for result in seen]
        assert positions == sorted(set(positions))


def test_config_change_mid_session_takes_effect(host: Host) -> None:
    host.config()
    image = colour(100)
    seed_5 = host.process(1, image)["data"]
    host.config(seed=6)
    seed_6 = host.process(2, image)["data"]
    host.config(seed=5)
    again = host.process(3, image)["data"]
    assert seed_6 != seed_5
    assert again == seed_5


def test_encoded_frames_and_results(host: Host) -> None:
    png = io.BytesIO()
    Image.fromarray(colour(7)).save(png, format="PNG")
    host.config(output_format="jpeg")
    frame = godot_frame(
        1,
        [
            (0, 0, 0, ENCODED, png.getvalue()),
            (SIZE, SIZE, 1, F32, DEPTH.tobytes()),
            (SIZE, SIZE, 3, F32, NORMALS.tobytes()),
        ],
    )
    host.ws.send(frame)
    result = host.result()
    assert result["format"] == 2 and result["data"].startswith(b"\xff\xd8\xff")
    assert (result["width"], result["height"]) == (0, 0)  # the JPEG's own header says
    assert Image.open(io.BytesIO(result["data"])).size == (SIZE, SIZE)


def _descriptor_lie(frame: bytes) -> bytes:
    """Buffer 1 (depth) claims 100 bytes; the message carries exactly 100 for it."""
    header = bytearray(frame[: 12 + 60])
    struct.pack_into("<I", header, 12 + 20 + 16, 100)
    colour_bytes = SIZE * SIZE * 3
    data = frame[72 : 72 + colour_bytes] + bytes(100) + frame[72 + colour_bytes + SIZE * SIZE * 4 :]
    return bytes(header) + data


def _field(frame: bytes, offset: int, value: int) -> bytes:
    patched = bytearray(frame)
    struct.pack_into("<I", patched, offset, value)
    return bytes(patched)


GOOD = scene_frame(9)
MALFORMED = [
    ("short", b"TLF", 0, "shorter than the 12-byte header"),
    ("magic", b"TLF2" + GOOD[4:], 0, "frame.magic"),
    ("id-zero", _field(GOOD, 4, 0), 0, "frame.id: must be 1 or more"),
    ("no-buffers", _field(GOOD, 8, 0), 9, "frame.buffer_count: 0"),
    ("descriptors-cut", GOOD[:40], 9, "too short for the descriptors of 3 buffers"),
    ("data-cut", GOOD[:-1], 9, "the message carries"),
    ("data-extra", GOOD + b"\0", 9, "the message carries"),
    ("byte-length", _descriptor_lie(GOOD), 9, "buffers[1] (controls[0]): byte length 100, but"),
    ("pixel-type", _field(GOOD, 12 + 20 + 12, 7), 9, "buffers[1] (controls[0]).pixel_type: 7"),
    ("channels", _field(GOOD, 12 + 8, 2), 9, "buffers[0] (colour).channels: 2"),
    (
        "not-an-image",
        godot_frame(9, [(0, 0, 0, ENCODED, b"GIF89a...")]),
        9,
        "not a PNG, JPEG or WebP",
    ),
]


def test_malformed_frames_get_errors_and_the_session_goes_on(host: Host) -> None:
    host.config()
    for name, message, frame_id, expected in MALFORMED:
        host.ws.send(message)
        error = host.error()
        assert expected in error["message"], name
        assert error["frame_id"] == frame_id, name
        assert error["code"] == "INVALID_ARGUMENT" and not error["session_ended"], name
    # Well-formed, but not what the config asks for: the server's own errors, per frame.
    host.ws.send(godot_frame(10, [(SIZE, SIZE, 3, U8, colour(10).tobytes())]))
    error = host.error()
    assert error["frame_id"] == 10 and "the config has 2 unit(s)" in error["message"]
    assert host.process(11)["frame_id"] == 11  # the session survived all of it


def test_bad_text_messages_get_errors_and_the_session_goes_on(host: Host) -> None:
    host.ws.send(scene_frame(1))
    error = host.error()
    assert error["code"] == "FAILED_PRECONDITION" and error["frame_id"] == 1
    assert "send a config message before frames" in error["message"]
    cases = [
        ("{not json", "message: not JSON"),
        ("[1, 2]", 'expected a JSON object with a "type"'),
        ('{"type": "hello"}', "unknown message type 'hello'"),
        ('{"type": "config"}', "config.prompt: required"),
        (json.dumps({**CONFIG, "steps": "two"}), 'config.steps: expected an integer, got "two"'),
        (json.dumps({**CONFIG, "colour": 1}), "config.colour: unknown field"),
        (json.dumps({**CONFIG, "output_format": "gif"}), "config.output_format: must be one of"),
        (
            json.dumps({**CONFIG, "controls": [{"model": "depth", "preprocessor": {"type": "x"}}]}),
            "config.controls[0].preprocessor.type: 'x'",
        ),
    ]
    for text, expected in cases:
        host.ws.send(text)
        error = host.error()
        assert expected in error["message"], text
        assert error["frame_id"] == 0 and not error["session_ended"], text
    host.config()
    assert host.process(2)["frame_id"] == 2
    # A config the server refuses: an error, and the session keeps its last good config.
    host.config(controls=[{"model": "nope"}])
    error = host.error()
    assert "no control model 'nope'" in error["message"] and not error["session_ended"]
    assert host.process(3)["frame_id"] == 3


def test_godot_style_numbers_and_every_preprocessor() -> None:
    """GDScript's JSON may write 2.0 for an int; every preprocessor field maps to the SDK."""
    config = bridge.config_from_json(
        {
            "prompt": "p",
            "steps": 3.0,
            "seed": 7.0,
            "width": 64.0,
            "scheduler": None,
            "controls": [
                {
                    "model": "depth",
                    "preprocessor": {
                        "type": "depth",
                        "buffer": "hardware",
                        "near": 0.1,
                        "far": 50,
                        "bottom_up": True,
                    },
                },
                {
                    "model": "normal",
                    "mode": "control",
                    "resize": "fill",
                    "preprocessor": {
                        "type": "normal",
                        "space": "world",
                        "y_down": True,
                        "camera_to_world": [1, 0, 0, 0, 0, 1, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1],
                    },
                },
                {
                    "model": "canny",
                    "start": 0.1,
                    "end": 0.9,
                    "preprocessor": {"type": "canny", "low": 50, "high": 150},
                },
                {"model": "canny", "preprocessor": {"type": "invert"}},
                {"model": "depth", "preprocessor": None},
            ],
        }
    )
    assert (config.steps, config.seed, config.width, config.scheduler) == (3, 7, 64, None)
    depth, normal, canny, invert, plain = config.controls
    assert depth.preprocessor == tether.Depth("hardware", 0.1, 50.0, True)
    assert normal.preprocessor.y_down and normal.mode == "control" and normal.resize == "fill"
    assert np.asarray(normal.preprocessor.camera_to_world)[:3, 3].tolist() == [0, 2, 3]
    assert canny.preprocessor == tether.Canny(50, 150) and (canny.start, canny.end) == (0.1, 0.9)
    assert isinstance(invert.preprocessor, tether.Invert) and plain.preprocessor is None
    with pytest.raises(bridge.ProtocolError, match="camera_to_world: expected 16 numbers"):
        bridge.config_from_json(
            {
                "prompt": "p",
                "controls": [
                    {
                        "model": "normal",
                        "preprocessor": {"type": "normal", "camera_to_world": [1, 2, 3]},
                    }
                ],
            }
        )
    with pytest.raises(bridge.ProtocolError, match="config.seed: expected an integer, got 1.5"):
        bridge.config_from_json({"prompt": "p", "seed": 1.5})


def test_host_disconnect_ends_the_server_session(bridge_address: str, server: str) -> None:
    with tether.Client(server) as client:
        deadline = time.monotonic() + 10
        while (before := client.server_info().live_sessions) != 0:
            assert time.monotonic() < deadline, "a live session of an earlier test is still open"
            time.sleep(0.05)
        with open_host(bridge_address) as websocket:
            host = Host(websocket)
            host.config()
            host.process(1)
            assert client.server_info().live_sessions == before + 1
        deadline = time.monotonic() + 10
        while client.server_info().live_sessions != before:
            assert time.monotonic() < deadline, "the server session outlived its host"
            time.sleep(0.05)


def test_a_server_that_is_gone_ends_the_session_and_a_new_config_reopens(server: str) -> None:
    """`bridge.serve` in a thread, pointed at a port where nothing listens."""
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    ports: list[int] = []
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(bridge.serve("127.0.0.1:1", port=0, ready=ports.append, stop=stop),),
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not ports:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        with open_host(f"127.0.0.1:{ports[0]}") as websocket:
            host = Host(websocket)
            host.config()
            error = host.error()
            assert error["session_ended"] and error["code"] == "UNAVAILABLE"
            host.ws.send(scene_frame(1))
            assert host.error()["code"] == "FAILED_PRECONDITION"  # no session any more
            host.config()  # a new session is tried, and ends the same way
            assert host.error()["session_ended"]
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=30)
        loop.close()


def test_http_page_404_and_origin_check(bridge_address: str) -> None:
    with urllib.request.urlopen(f"http://{bridge_address}/") as response:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = response.read().decode()
    assert "/viewer" in page and "0x31524C54" in page  # it reads the documented result
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://{bridge_address}/elsewhere")
    assert missing.value.code == 404
    # Another site's page may not drive the bridge; the bridge's own page may.
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{bridge_address}/live", origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with connect(f"ws://{bridge_address}/viewer", origin=f"http://{bridge_address}") as viewer:
        status = json.loads(viewer.recv(timeout=RECEIVE_TIMEOUT_S))
        assert status["type"] == "status" and status["viewers"] >= 1


def test_cli_options() -> None:
    parser = argparse.ArgumentParser()
    bridge.add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.server, defaults.host, defaults.port) == ("127.0.0.1:50051", "127.0.0.1", 8765)
    assert (defaults.token, defaults.tls) == (os.environ.get("TETHER_TOKEN"), False)
    custom = parser.parse_args(["--tls", "ca.pem", "--token", "t", "--allow-origin", "*"])
    assert (custom.tls, custom.token, custom.allow_origin) == ("ca.pem", "t", ["*"])


def test_the_godot_addon_speaks_this_format() -> None:
    """Godot cannot run here: hold the addon's layout constants to the bridge's."""
    source = GDSCRIPT.read_text()
    constants = dict(re.findall(r"^const (\w+) := (0x[0-9A-Fa-f]+|\d+)\b", source, re.M))
    expected = {
        "FRAME_MAGIC": int.from_bytes(bridge.FRAME_MAGIC, "little"),
        "RESULT_MAGIC": int.from_bytes(bridge.RESULT_MAGIC, "little"),
        "FRAME_HEADER_SIZE": bridge.FRAME_HEADER.size,
        "BUFFER_DESCRIPTOR_SIZE": bridge.BUFFER_DESCRIPTOR.size,
        "RESULT_HEADER_SIZE": bridge.RESULT_HEADER.size,
        "PIXEL_U8": 1,
        "PIXEL_F32": 3,
        "FORMAT_PNG": bridge.RESULT_FORMATS["png"],
        "FORMAT_JPEG": bridge.RESULT_FORMATS["jpeg"],
        "FORMAT_WEBP": bridge.RESULT_FORMATS["webp"],
        "FORMAT_RAW": bridge.RESULT_FORMATS["raw"],
    }
    assert {name: int(constants.get(name, "-1"), 0) for name in expected} == expected
    # The test's frame builder and the bridge's own agree byte for byte, and the bridge
    # reads the buffers back bit for bit, in the shapes the SDK sends.
    pixels = colour(3)
    frame = scene_frame(3, pixels)
    assert frame == bridge.pack_frame(3, [pixels, DEPTH, NORMALS])
    frame_id, (image, depth, normals) = bridge.unpack_frame(frame)
    assert frame_id == 3 and image.dtype == np.uint8 and np.array_equal(image, pixels)
    assert depth.dtype == np.float32 and np.array_equal(depth, DEPTH)  # (H, W)
    assert normals.dtype == np.float32 and np.array_equal(normals, NORMALS)


# --- the viewer page in a real browser ---------------------------------------------------


class Chromium:
    """Headless Chromium driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        executable = shutil.which("chromium")
        if executable is None:
            subprocess.run(["bash", str(SETUP_CHROMIUM)], check=True, capture_output=True)
            executable = shutil.which("chromium")
        assert executable, "clients/godot/setup_test_env.sh did not install chromium"
        self.log = profile.parent / "chromium.log"
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.process.poll() is None, f"chromium exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            targets = json.load(response)
        page = next(target for target in targets if target["type"] == "page")
        self.exits = contextlib.ExitStack()
        self.devtools = self.exits.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None)
        )
        self.calls = 0

    def call(self, method: str, **params: object) -> dict:
        self.calls += 1
        self.devtools.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            reply = json.loads(self.devtools.recv(timeout=RECEIVE_TIMEOUT_S))
            if reply.get("id") == self.calls:  # skip events
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = RECEIVE_TIMEOUT_S) -> object:
        """Poll until `expression` is truthy; until the page has loaded it may throw."""
        guarded = f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()"
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(guarded)):
            assert time.monotonic() < deadline, f"never true in the page: {expression}"
            time.sleep(0.05)
        return value

    def close(self) -> None:
        self.exits.close()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


def text(element_id: str) -> str:
    return f"document.getElementById({element_id!r}).textContent"


def test_viewer_page_shows_live_frames_in_chromium(chromium: Chromium, bridge_address: str) -> None:
    chromium.call("Page.navigate", url=f"http://{bridge_address}/")
    chromium.wait_for(f"{text('state')} === 'connected'")
    with open_host(bridge_address) as websocket:
        host = Host(websocket)
        host.config()
        chromium.wait_for(f"{text('hosts')} === '1'")
        start = int(chromium.evaluate(text("frames")))  # a result from earlier tests, or 0
        results = [host.process(frame_id) for frame_id in range(1, 5)]
        last = results[-1]
        chromium.wait_for(f"{text('frame-id')} === '4' && {text('frames')} === '{start + 4}'")
        fps = chromium.evaluate(text("fps"))
        assert float(fps) > 0, fps
        # Shown with one decimal: the numbers of the last result's header.
        assert float(chromium.evaluate(text("lag"))) == pytest.approx(last["lag_ms"], abs=0.051)
        latency = float(chromium.evaluate(text("latency")))
        assert latency == pytest.approx(last["latency_ms"], abs=0.051)
        assert chromium.evaluate(text("size")) == f"{SIZE}x{SIZE}"
        # The canvas holds the last result's pixels exactly.
        rgba = chromium.evaluate(
            "Array.from(document.getElementById('view').getContext('2d')"
            f".getImageData(0, 0, {SIZE}, {SIZE}).data)"
        )
        shown = np.array(rgba, dtype=np.uint8).reshape(SIZE, SIZE, 4)
        expected = np.frombuffer(last["data"], np.uint8).reshape(SIZE, SIZE, 3)
        assert np.array_equal(shown[..., :3], expected) and (shown[..., 3] == 255).all()
        # An encoded result goes through the browser's own decoder.
        host.config(output_format="png")
        png = host.process(5)
        chromium.wait_for(f"{text('frame-id')} === '5'")
        rgba = chromium.evaluate(
            "Array.from(document.getElementById('view').getContext('2d')"
            f".getImageData(0, 0, {SIZE}, {SIZE}).data)"
        )
        decoded = np.asarray(Image.open(io.BytesIO(png["data"])).convert("RGB"))
        shown = np.array(rgba, dtype=np.uint8).reshape(SIZE, SIZE, 4)
        assert np.array_equal(shown[..., :3], decoded)
    chromium.wait_for(f"{text('hosts')} === '0'")  # the page saw the host go
