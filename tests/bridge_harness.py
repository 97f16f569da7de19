"""For the bridge's tests: a `tether bridge` process, a host speaking to it over a real
WebSocket, and the frames the Godot addon sends (colour, linear depth, view normals)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from conftest import ROOT, free_port
from tether import bridge
from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(ROOT / "examples"))
from scene import render  # noqa: E402

SIZE = 64
FAR = 100.0
RECEIVE_TIMEOUT_S = 30

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


def colour(k: int) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def scene_frame(frame_id: int, image: np.ndarray | None = None) -> bytes:
    """Colour RGB8 + depth F32 x1 + normals F32 x3, as the addon captures them."""
    return bridge.pack_frame(
        frame_id, [colour(frame_id) if image is None else image, DEPTH, NORMALS]
    )


class BridgeProcess:
    """`python -m tether.bridge ARGS` on a free port, started the way a user starts it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = Path(tempfile.gettempdir()) / f"tether-bridge-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tether.bridge", "--port", str(self.port), *args],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 30
        while "tether bridge:" not in self.log.read_text():
            assert self.process.poll() is None, f"bridge exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"bridge not listening: {self.log.read_text()}"
            time.sleep(0.05)

    def threads(self) -> int:
        """The process's threads, all of them (grpc's own included)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1]
        )

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: a clean exit, at once."""
        self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired as timeout:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the bridge ignored SIGTERM: {self.log.read_text()}") from timeout
        assert code == 0, self.log.read_text()


class Host:
    """A WebSocket client speaking the host side of the protocol."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.ws = websocket

    @classmethod
    @contextlib.contextmanager
    def connect(cls, address: str, path: str = "/live", **options: Any) -> Iterator[Host]:
        with connect(f"ws://{address}{path}", max_size=None, **options) as websocket:
            yield cls(websocket)

    def config(self, **changes: object) -> None:
        self.ws.send(json.dumps({**CONFIG, **changes}))

    def receive(self) -> bridge.ResultMessage | dict:
        """The next message: a result, or a JSON message as a dict."""
        message = self.ws.recv(timeout=RECEIVE_TIMEOUT_S)
        return bridge.unpack_result(message) if isinstance(message, bytes) else json.loads(message)

    def result(self) -> bridge.ResultMessage:
        message = self.receive()
        assert isinstance(message, bridge.ResultMessage), f"expected a result, got {message}"
        return message

    def error(self) -> dict:
        message = self.receive()
        assert isinstance(message, dict) and message["type"] == "error", message
        return message

    def process(self, frame_id: int, image: np.ndarray | None = None) -> bridge.ResultMessage:
        self.ws.send(scene_frame(frame_id, image))
        return self.result()
