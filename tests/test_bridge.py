"""`tether bridge` in front of a real Tether server on the tiny model: hosts speaking its
wire format (protos/bridge.md) as the Godot addon does, bad input, disconnects, HTTP.

The codec and config messages are tested on their own in test_bridge_wire.py, the command
and its token in test_bridge_cli.py, the viewer page in test_bridge_viewer.py and the
Godot addon in test_godot.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import tether
from bridge_harness import (
    CONFIG,
    DEPTH,
    NORMALS,
    RECEIVE_TIMEOUT_S,
    SIZE,
    BridgeProcess,
    Host,
    colour,
    scene_frame,
)
from PIL import Image
from tether import bridge
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def bridge_address(server: str) -> Iterator[str]:
    running = BridgeProcess("--server", server)
    yield running.address
    running.stop()


@pytest.fixture
def host(bridge_address: str) -> Iterator[Host]:
    with Host.connect(bridge_address) as connected:
        yield connected


def test_results_are_what_the_sdk_gets_for_the_same_frame(host: Host, server: str) -> None:
    host.config()
    first = host.process(1)
    assert first.frame_id == 1 and first.format == "raw"
    assert (first.width, first.height) == (SIZE, SIZE)
    assert len(first.data) == SIZE * SIZE * 3 and not first.reused
    # The bridge's lag spans the server's latency: frame in -> result out, one hop wider.
    assert first.lag_ms >= first.latency_ms > 0

    # The same session config and frame straight through the SDK: the same pixels, so the
    # float buffers crossed the bridge bit for bit.
    config = bridge.config_from_json({k: v for k, v in CONFIG.items() if k != "type"})
    with tether.Client(server) as client, client.live(config) as session:
        session.send(tether.LiveFrame(1, colour(1), controls=[DEPTH, NORMALS]))
        session.close()
        (direct,) = list(session)
    assert direct.data == first.data


def test_control_buffers_reach_the_server_and_reuse_is_flagged(host: Host) -> None:
    """The tiny model's ControlNets start at zero (their output convolutions), so their
    buffers do not show in its images; the server's reuse check compares them instead."""
    host.config(reuse_threshold=0.001)
    image = colour(50)
    assert not host.process(1, image).reused
    assert host.process(2, image).reused  # the same colour, depth and normals
    host.ws.send(bridge.pack_frame(3, [image, DEPTH[::-1], NORMALS]))  # depth upside down
    assert not host.result().reused  # the server saw the new depth map


def test_frames_sent_faster_than_served(host: Host, bridge_address: str) -> None:
    with connect(f"ws://{bridge_address}/viewer", max_size=None) as viewer:
        host.config()
        sent = 20
        for frame_id in range(1, sent + 1):
            host.ws.send(scene_frame(frame_id))
        answered = []
        while not answered or answered[-1].frame_id != sent:  # the newest is always served
            answered.append(host.result())
        ids = [result.frame_id for result in answered]
        assert ids == sorted(set(ids)) and set(ids) <= set(range(1, sent + 1))
        assert answered[-1].dropped + len(answered) == sent
        # The viewer got the very same messages, in order; it may skip some (newest wins),
        # and its first may be the last result of an earlier test, shown on connect.
        seen = []
        while not seen or seen[-1] != answered[-1]:
            message = viewer.recv(timeout=RECEIVE_TIMEOUT_S)
            if isinstance(message, bytes):
                seen.append(bridge.unpack_result(message))
        if seen[0] not in answered:
            seen.pop(0)
        positions = [answered.index(result) for result in seen]
        assert positions == sorted(set(positions))


def test_config_change_mid_session_takes_effect(host: Host) -> None:
    host.config()
    image = colour(100)
    seed_5 = host.process(1, image).data
    host.config(seed=6)
    seed_6 = host.process(2, image).data
    host.config(seed=5)
    again = host.process(3, image).data
    assert seed_6 != seed_5
    assert again == seed_5


def test_encoded_frames_and_results(host: Host) -> None:
    png = io.BytesIO()
    Image.fromarray(colour(7)).save(png, format="PNG")
    host.config(output_format="jpeg")
    host.ws.send(bridge.pack_frame(1, [png.getvalue(), DEPTH, NORMALS]))
    result = host.result()
    assert result.format == "jpeg" and result.data.startswith(b"\xff\xd8\xff")
    assert (result.width, result.height) == (0, 0)  # the JPEG's own header says
    assert result.image.shape == (SIZE, SIZE, 3)


def test_malformed_frames_get_errors_and_the_session_goes_on(host: Host) -> None:
    host.config()
    # Every malformation is named by the codec (test_bridge_wire.py); here, that such errors
    # reach the host and leave the session alone.
    for message, frame_id, expected in [
        (b"TLF", 0, "shorter than the 12-byte header"),
        (scene_frame(9)[:-1], 9, "the message carries"),
    ]:
        host.ws.send(message)
        error = host.error()
        assert expected in error["message"] and error["frame_id"] == frame_id
        assert error["code"] == "INVALID_ARGUMENT" and not error["session_ended"]
    # Well-formed, but not what the config asks for: the server's own errors, per frame.
    host.ws.send(bridge.pack_frame(10, [colour(10)]))
    error = host.error()
    assert error["frame_id"] == 10 and "the config has 2 unit(s)" in error["message"]
    assert host.process(11).frame_id == 11  # the session survived all of it


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
    assert host.process(2).frame_id == 2
    # A config the server refuses: an error, and the session keeps its last good config.
    host.config(controls=[{"model": "nope"}])
    error = host.error()
    assert "no control model 'nope'" in error["message"] and not error["session_ended"]
    assert host.process(3).frame_id == 3


def test_host_disconnect_ends_the_server_session(bridge_address: str, server: str) -> None:
    with tether.Client(server) as client:
        deadline = time.monotonic() + 10
        while (before := client.server_info().live_sessions) != 0:
            assert time.monotonic() < deadline, "a live session of an earlier test is still open"
            time.sleep(0.05)
        with Host.connect(bridge_address) as host:
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
        with Host.connect(f"127.0.0.1:{ports[0]}") as host:
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
