"""`tether bridge`: live sessions over WebSocket, for hosts that cannot speak gRPC.

Godot's `WebSocketPeer` first, and anything else with a WebSocket client. One local
process, built on `tether.aio`, forwards each host connection to its own `Live` session on
a Tether server, and serves a viewer page that shows the results as they arrive:

    tether bridge --server 127.0.0.1:50051 --port 8765
    python -m tether.bridge --server 127.0.0.1:50051 --port 8765     # the same

    ws://127.0.0.1:8765/live      a host: JSON control messages + binary frames
    ws://127.0.0.1:8765/viewer    a viewer: receives every host's results
    http://127.0.0.1:8765/        the viewer page (live frames, fps, lag)

Needs the `websockets` package (`pip install 'tether[bridge]'`); `import tether` does not.

Wire format
===========

All numbers are little-endian. Text messages are JSON objects with a "type"; binary
messages are frames (host -> bridge) and results (bridge -> host and viewers). Offsets
are in bytes; u32 = unsigned 32-bit integer, f32 = IEEE float.

Host -> bridge, text: the session config
----------------------------------------
    {"type": "config",
     "prompt": "a watercolour village",        required
     "negative_prompt": "",
     "controls": [                              one buffer per unit in every frame, in order
        {"model": "depth", "weight": 0.8,       model: a control model of the server
         "start": 0.0, "end": 1.0,              fractions of the steps
         "mode": "balanced", "resize": "crop",
         "preprocessor": {"type": "depth", "buffer": "linear", "near": 0.0, "far": 100.0}},
        {"model": "normal", "weight": 0.5,
         "preprocessor": {"type": "normal", "space": "view"}}],
     "steps": 2, "strength": 0.5, "seed": 0,   steps 1-4; steps x strength >= 1 step
     "guidance_scale": 1.0,                     <= 1: no classifier-free guidance (fast)
     "width": 0, "height": 0,                   0: the frame's own size (multiples of 8)
     "output_format": "raw",                    "raw" (RGB8) | "jpeg" | "png" | "webp"
     "reuse_threshold": 0.0,                    > 0: a nearly identical frame reuses its output
     "scheduler": null, "model": null}          null: the server's defaults

Only "prompt" is required; the others default as shown (controls: none). The first config
opens the session; a later one changes it for the frames processed after it. Preprocessor
types, with their optional fields (see `tether.Depth`, `tether.Normal`, `tether.Canny`):
  "depth"  buffer ("linear" | "hardware" | "hardware_reversed" | "positions"), near, far,
           bottom_up. Linear view depth with "far" = the camera's far plane marks the
           background.
  "normal" space ("view" | "world"), camera_to_world (16 numbers, row-major 4x4, with
           "world"), y_down, legacy, bottom_up. View space: +X right, +Y up, +Z toward the
           viewer (Godot's, OpenGL's and Blender's).
  "canny"  low, high (8-bit thresholds; the buffer is a colour image).
  "invert" (black-on-white line art to white-on-black).
  null     the buffer is the control map itself.

Host -> bridge, binary: a frame
-------------------------------
    offset  size  field
    0       4     magic: the bytes "TLF1" (as a u32: 0x31464C54)
    4       4     u32 frame id, 1 or more, increasing (results name it; 0 names no frame)
    8       4     u32 buffer count N: 1 + the number of control units of the config
    12      20*N  N buffer descriptors, 20 bytes each:
                    +0  u32 width
                    +4  u32 height
                    +8  u32 channels: 1, 3 or 4
                    +12 u32 pixel type: 0 = an encoded PNG/JPEG/WebP file (width, height
                        and channels are then ignored: write 0), 1 = U8, 2 = F16, 3 = F32
                    +16 u32 byte length: width x height x channels x (1, 2 or 4), or the
                        encoded file's size
    12+20*N ...   the N buffers' bytes, concatenated in order, no padding; the message
                  ends with the last buffer
Buffer 0 is the colour image (the img2img input: RGB8, 3 channels of U8); buffer i >= 1 is
the image of control unit i-1: e.g. linear depth as 1 channel of F32, view-space normals
as 3 channels of F32 (raw float buffers: no 8-bit loss). Pixels are row-major, top row
first, channels interleaved. A host may send faster than frames are served: only the
newest frame waiting when the server is ready is served, the others count as dropped.

Bridge -> host and viewers, binary: a result
--------------------------------------------
    offset  size  field
    0       4     magic: the bytes "TLR1" (as a u32: 0x31524C54)
    4       4     u32 frame id this result answers
    8       4     u32 format: 1 = PNG, 2 = JPEG, 3 = WebP, 4 = raw RGB8
    12      4     u32 width  (raw; 0 for an encoded file, whose own header says)
    16      4     u32 height (raw; 0 for an encoded file)
    20      4     u32 frames dropped so far in the session
    24      4     f32 server latency in ms (frame reached the server -> result left it)
    28      4     f32 lag in ms (frame reached the bridge -> result left the bridge)
    32      4     u32 flags: bit 0 = reused (the previous output, sent again)
    36      4     u32 byte length L of the image
    40      L     the image: width x height x 3 bytes for raw, else the encoded file

Bridge -> host (and viewers), text: an error
--------------------------------------------
    {"type": "error", "frame_id": 7, "code": "INVALID_ARGUMENT",
     "message": "frame.buffers[1]: byte length 100, but 64x64x1 of float32 needs 16384",
     "session_ended": false}
frame_id is 0 when the error is not about one frame (a config, a text message). The
session goes on unless "session_ended" is true (the server ended it: e.g. UNAVAILABLE,
UNAUTHENTICATED); then the next config opens a new one. Frames before the first config get
an error too (code "FAILED_PRECONDITION").

Bridge -> viewers, text: status
-------------------------------
    {"type": "status", "hosts": 1, "viewers": 2}      whenever either count changes
Viewers get every host's results, newest first: a slow viewer skips results rather than
holding anything up. What viewers send is ignored.

Browsers may connect only from the bridge's own page (the Origin header must name the
bridge's host), so that other web sites cannot use it; `--allow-origin` adds origins
(e.g. a Godot web export's). Hosts without an Origin header (Godot, Python) are let in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from . import connection, images
from .errors import TetherError
from .live import LiveConfig, LiveFrame, LiveResult
from .protocol import Canny, Control, Depth, Invert, Normal

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
HOST_PATH = "/live"
VIEWER_PATH = "/viewer"
# A 1024x1024 frame with RGB8 colour, F32 depth and F32 normals is 20 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

FRAME_MAGIC = b"TLF1"
RESULT_MAGIC = b"TLR1"
FRAME_HEADER = struct.Struct("<4sII")  # magic, frame id, buffer count
BUFFER_DESCRIPTOR = struct.Struct("<IIIII")  # width, height, channels, pixel type, length
RESULT_HEADER = struct.Struct("<4sIIIIIffII")  # see the module docstring
MAX_BUFFERS = 17  # colour + 16 control units: far more than a denoising loop can use

PIXEL_ENCODED = 0
PIXEL_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype("<f2"), 3: np.dtype("<f4")}
PIXEL_TYPES = {dtype: code for code, dtype in PIXEL_DTYPES.items()}
RESULT_FORMATS = {"png": 1, "jpeg": 2, "webp": 3, "raw": 4}
FORMAT_NAMES = {code: name for name, code in RESULT_FORMATS.items()}
FLAG_REUSED = 1
# Frame arrival times kept for the lag of their results; older ones are forgotten.
MAX_PENDING_FRAMES = 256


class ProtocolError(ValueError):
    """A message from a host that breaks the wire format; the text names what is wrong."""

    code = "INVALID_ARGUMENT"


# --- frames -------------------------------------------------------------------------


Buffer = np.ndarray | bytes  # raw pixels (H, W), (H, W, C) or an encoded PNG/JPEG/WebP file


def pack_frame(frame_id: int, buffers: Sequence[Buffer]) -> bytes:
    """A binary frame message: colour first, then one buffer per control unit. Arrays
    must be uint8, float16 or float32; bytes must be a PNG, JPEG or WebP file."""
    descriptors, payloads = [], []
    for i, buffer in enumerate(buffers):
        if isinstance(buffer, (bytes, bytearray)):
            descriptors.append(BUFFER_DESCRIPTOR.pack(0, 0, 0, PIXEL_ENCODED, len(buffer)))
            payloads.append(bytes(buffer))
            continue
        array = np.asarray(buffer)
        array = array[:, :, None] if array.ndim == 2 else array
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in PIXEL_TYPES or array.ndim != 3:
            raise ValueError(f"buffers[{i}]: expected (H, W[, C]) uint8/float16/float32")
        height, width, channels = array.shape
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        descriptors.append(
            BUFFER_DESCRIPTOR.pack(width, height, channels, PIXEL_TYPES[dtype], len(data))
        )
        payloads.append(data)
    header = FRAME_HEADER.pack(FRAME_MAGIC, frame_id, len(buffers))
    return b"".join([header, *descriptors, *payloads])


def unpack_frame(message: bytes) -> tuple[int, list[Buffer]]:
    """A binary frame message -> (frame id, buffers), checking every field against the
    others; a `ProtocolError` names the first field that is wrong."""
    if len(message) < FRAME_HEADER.size:
        raise ProtocolError(
            f"frame: {len(message)} bytes, shorter than the {FRAME_HEADER.size}-byte header "
            "(magic 'TLF1', u32 frame id, u32 buffer count)"
        )
    magic, frame_id, count = FRAME_HEADER.unpack_from(message)
    if magic != FRAME_MAGIC:
        raise ProtocolError(f"frame.magic: {magic!r}, expected b'TLF1' (is this a frame?)")
    if frame_id == 0:
        raise ProtocolError("frame.id: must be 1 or more (0 names no frame in errors)")
    if not 1 <= count <= MAX_BUFFERS:
        raise ProtocolError(
            f"frame.buffer_count: {count}; expected 1 (the colour image) + one per control "
            f"unit, at most {MAX_BUFFERS}"
        )
    data_start = FRAME_HEADER.size + count * BUFFER_DESCRIPTOR.size
    if len(message) < data_start:
        raise ProtocolError(
            f"frame: {len(message)} bytes, too short for the descriptors of {count} buffers "
            f"(the header ends at byte {data_start})"
        )
    descriptors = [
        BUFFER_DESCRIPTOR.unpack_from(message, FRAME_HEADER.size + i * BUFFER_DESCRIPTOR.size)
        for i in range(count)
    ]
    announced = sum(descriptor[4] for descriptor in descriptors)
    if len(message) - data_start != announced:
        raise ProtocolError(
            f"frame: the descriptors announce {announced} bytes of buffers, the message "
            f"carries {len(message) - data_start}"
        )
    buffers: list[Buffer] = []
    offset = data_start
    for i, (width, height, channels, pixel_type, length) in enumerate(descriptors):
        field = f"frame.buffers[{i}]" + (" (colour)" if i == 0 else f" (controls[{i - 1}])")
        payload = message[offset : offset + length]
        offset += length
        buffers.append(_buffer(field, width, height, channels, pixel_type, payload))
    return frame_id, buffers


def _buffer(
    field: str, width: int, height: int, channels: int, pixel_type: int, payload: bytes
) -> Buffer:
    if pixel_type == PIXEL_ENCODED:
        if images.encoded_format(payload) is None:
            raise ProtocolError(f"{field}: pixel type 0 (encoded), but not a PNG, JPEG or WebP")
        return bytes(payload)
    if pixel_type not in PIXEL_DTYPES:
        raise ProtocolError(
            f"{field}.pixel_type: {pixel_type}; expected 0 (encoded), 1 (U8), 2 (F16), 3 (F32)"
        )
    if width < 1 or height < 1:
        raise ProtocolError(f"{field}: width and height must be 1 or more (got {width}x{height})")
    if channels not in (1, 3, 4):
        raise ProtocolError(f"{field}.channels: {channels}; expected 1, 3 or 4")
    dtype = PIXEL_DTYPES[pixel_type]
    expected = width * height * channels * dtype.itemsize
    if len(payload) != expected:
        raise ProtocolError(
            f"{field}: byte length {len(payload)}, but {width}x{height}x{channels} of "
            f"{dtype.name} needs {expected}"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(height, width, channels)
    # One channel travels as (H, W): the shape the SDK and `tether.maps` use for depth.
    return array[:, :, 0] if channels == 1 else array


# --- results ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResultMessage:
    """A binary result message, read back (for Python hosts and tests)."""

    frame_id: int
    format: str  # "raw", "png", "jpeg" or "webp"
    width: int
    height: int
    dropped: int
    latency_ms: float
    lag_ms: float
    reused: bool
    data: bytes

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 pixels; encoded formats need pillow."""
        if self.format == "raw":
            return np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, 3)
        return images.from_proto(images.to_proto(self.data))


def pack_result(result: LiveResult, lag_ms: float) -> bytes:
    header = RESULT_HEADER.pack(
        RESULT_MAGIC,
        result.frame_id,
        RESULT_FORMATS[result.format],
        result.width,
        result.height,
        result.dropped,
        result.latency_ms,
        lag_ms,
        FLAG_REUSED if result.reused else 0,
        len(result.data),
    )
    return header + result.data


def unpack_result(message: bytes) -> ResultMessage:
    if len(message) < RESULT_HEADER.size:
        raise ProtocolError(f"result: {len(message)} bytes, shorter than its header")
    fields = RESULT_HEADER.unpack_from(message)
    magic, frame_id, fmt, width, height, dropped, latency, lag, flags, length = fields
    if magic != RESULT_MAGIC or fmt not in FORMAT_NAMES:
        raise ProtocolError(f"result: magic {magic!r}, format {fmt}: not a result message")
    data = message[RESULT_HEADER.size :]
    if len(data) != length:
        raise ProtocolError(f"result: {len(data)} bytes of image, the header says {length}")
    return ResultMessage(
        frame_id=frame_id,
        format=FORMAT_NAMES[fmt],
        width=width,
        height=height,
        dropped=dropped,
        latency_ms=latency,
        lag_ms=lag,
        reused=bool(flags & FLAG_REUSED),
        data=data,
    )


# --- configs ------------------------------------------------------------------------

_CONFIG_FIELDS = {
    "prompt": str,
    "negative_prompt": str,
    "controls": list,
    "steps": int,
    "strength": float,
    "seed": int,
    "guidance_scale": float,
    "width": int,
    "height": int,
    "output_format": str,
    "reuse_threshold": float,
    "scheduler": str,
    "model": str,
}
_CONTROL_FIELDS = {
    "model": str,
    "weight": float,
    "start": float,
    "end": float,
    "mode": str,
    "resize": str,
    "preprocessor": dict,
}
_PREPROCESSORS: dict[str, tuple[type, dict[str, type]]] = {
    "depth": (Depth, {"buffer": str, "near": float, "far": float, "bottom_up": bool}),
    "normal": (
        Normal,
        {"space": str, "camera_to_world": list, "y_down": bool, "legacy": bool, "bottom_up": bool},
    ),
    "canny": (Canny, {"low": int, "high": int}),
    "invert": (Invert, {}),
}


def config_from_json(message: Mapping[str, Any]) -> LiveConfig:
    """A config message (without its "type") -> LiveConfig, every field checked; a
    `ProtocolError` names the first one that is wrong."""
    fields = _fields(message, _CONFIG_FIELDS, "config", required=("prompt",))
    fields["controls"] = [
        _control(unit, f"config.controls[{i}]") for i, unit in enumerate(fields.get("controls", []))
    ]
    config = LiveConfig(**fields)
    try:
        config.to_proto()  # the SDK's own checks (output_format, modes, matrices), now
    except ValueError as error:
        raise ProtocolError(f"config.{error}") from None
    return config


def _control(unit: Any, field: str) -> Control:
    if not isinstance(unit, dict):
        raise ProtocolError(f"{field}: expected an object, got {type(unit).__name__}")
    fields = _fields(unit, _CONTROL_FIELDS, field, required=("model",))
    settings = fields.pop("preprocessor", None)
    preprocessor = None
    if settings is not None:
        kind = settings.get("type")
        if kind not in _PREPROCESSORS:
            raise ProtocolError(
                f"{field}.preprocessor.type: {kind!r}; expected one of "
                f"{', '.join(map(repr, _PREPROCESSORS))}"
            )
        cls, known = _PREPROCESSORS[kind]
        options = {key: value for key, value in settings.items() if key != "type"}
        preprocessor = cls(**_fields(options, known, f"{field}.preprocessor"))
        matrix = getattr(preprocessor, "camera_to_world", None)
        if matrix is not None:
            if len(matrix) != 16 or not all(_is_number(value) for value in matrix):
                raise ProtocolError(
                    f"{field}.preprocessor.camera_to_world: expected 16 numbers (row-major 4x4)"
                )
            matrix = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
            preprocessor = dataclasses.replace(preprocessor, camera_to_world=matrix)
    return Control(image=None, preprocessor=preprocessor, **fields)


def _fields(
    values: Mapping[str, Any],
    known: Mapping[str, type],
    where: str,
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """Check names and JSON types; null means "the default" (the field is left out)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ProtocolError(f"{where}.{key}: unknown field; known: {', '.join(known)}")
        if value is None:
            continue
        kind = known[key]
        if kind is int and _is_number(value) and float(value).is_integer():
            value = int(value)  # GDScript's JSON writes floats such as 2.0 for some ints
        elif kind is float and _is_number(value):
            value = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(
                f"{where}.{key}: expected {_JSON_NAMES[kind]}, got {json.dumps(value)[:40]}"
            )
        out[key] = value
    for key in required:
        if key not in out:
            raise ProtocolError(f"{where}.{key}: required")
    return out


_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the bridge ---------------------------------------------------------------------


def error_message(
    message: str, *, frame_id: int = 0, code: str = "INVALID_ARGUMENT", ended: bool = False
) -> str:
    return json.dumps(
        {
            "type": "error",
            "frame_id": frame_id,
            "code": code,
            "message": message,
            "session_ended": ended,
        }
    )


class _Viewer:
    """One viewer connection: status notes in order, results newest-only, so that a slow
    browser tab never holds up a host."""

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.notes: deque[str] = deque(maxlen=32)
        self.result: bytes | None = None
        self.wake = asyncio.Event()

    def offer(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.result = message
        else:
            self.notes.append(message)
        self.wake.set()

    async def pump(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.notes:
                await self.websocket.send(self.notes.popleft())
            if self.result is not None:
                message, self.result = self.result, None
                await self.websocket.send(message)


class Bridge:
    """Accepts hosts and viewers; one `tether.aio.Client` shared by every host session."""

    def __init__(self, client: Any, allowed_origins: Sequence[str] = ()) -> None:
        self.client = client
        self.allowed_origins = {origin.rstrip("/") for origin in allowed_origins}
        self.hosts = 0
        self.viewers: set[_Viewer] = set()
        self.last_result: bytes | None = None

    def process_request(self, connection: Any, request: Any) -> Any:
        """Plain HTTP before any WebSocket: the viewer page, 404s, the origin check."""
        path = urlsplit(request.path).path
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            return connection.respond(403, f"origin {origin} may not use this bridge\n")
        if path in ("/", "/index.html"):
            response = connection.respond(200, VIEWER_PAGE)
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            response.headers["Cache-Control"] = "no-store"
            return response
        if path not in (HOST_PATH, VIEWER_PATH):
            return connection.respond(
                404, f"nothing at {path}: hosts use {HOST_PATH}, viewers {VIEWER_PATH}\n"
            )
        return None  # go on with the WebSocket handshake

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        return (
            "*" in self.allowed_origins
            or origin.rstrip("/") in self.allowed_origins
            or urlsplit(origin).netloc == host
        )

    async def handle(self, websocket: Any) -> None:
        path = urlsplit(websocket.request.path).path
        if path == VIEWER_PATH:
            await self._viewer(websocket)
        else:
            self.hosts += 1
            self._status()
            try:
                await _HostSession(self, websocket).run()
            finally:
                self.hosts -= 1
                self._status()

    def broadcast(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.last_result = message
        for viewer in self.viewers:
            viewer.offer(message)

    def _status(self) -> None:
        status = {"type": "status", "hosts": self.hosts, "viewers": len(self.viewers)}
        self.broadcast(json.dumps(status))

    async def _viewer(self, websocket: Any) -> None:
        viewer = _Viewer(websocket)
        self.viewers.add(viewer)
        self._status()
        if self.last_result is not None:
            viewer.offer(self.last_result)  # something to show at once
        pump = asyncio.create_task(viewer.pump())
        try:
            # What a viewer sends is ignored; this waits for it to go.
            async for _ in websocket:
                pass
        finally:
            self.viewers.discard(viewer)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            self._status()


class _HostSession:
    """One host connection = one Live session, opened by its first config."""

    def __init__(self, bridge: Bridge, websocket: Any) -> None:
        self.bridge = bridge
        self.websocket = websocket
        self.live: Any = None  # tether.aio.LiveSession while a session is open
        self.reader: asyncio.Task | None = None
        self.arrived: OrderedDict[int, float] = OrderedDict()  # frame id -> arrival time

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.websocket:
                if isinstance(message, str):
                    await self._on_text(message)
                else:
                    await self._on_frame(message)
        except ConnectionClosed:
            pass
        finally:
            await self._end()

    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as error:
            await self._error(f"message: not JSON ({error})")
            return
        if not isinstance(message, dict) or "type" not in message:
            await self._error('message: expected a JSON object with a "type"')
            return
        kind = message["type"]
        if kind != "config":
            await self._error(f'type: unknown message type {kind!r}; hosts send "config"')
            return
        try:
            config = config_from_json({k: v for k, v in message.items() if k != "type"})
        except ProtocolError as error:
            await self._error(str(error))
            return
        try:
            if self.live is None:
                await self._open(config)
            else:
                await self.live.configure(config)
        except TetherError as error:
            await self._session_ended(error)

    async def _open(self, config: LiveConfig) -> None:
        live = self.bridge.client.live(config)
        await live.__aenter__()
        self.live = live
        self.arrived.clear()
        self.reader = asyncio.create_task(self._read(live))

    async def _on_frame(self, message: bytes) -> None:
        try:
            frame_id, buffers = unpack_frame(message)
        except ProtocolError as error:
            await self._error(str(error), frame_id=_frame_id(message))
            return
        if self.live is None:
            await self._error(
                "no session: send a config message before frames",
                frame_id=frame_id,
                code="FAILED_PRECONDITION",
            )
            return
        try:
            frame = LiveFrame(frame_id, buffers[0], controls=buffers[1:])
            self.arrived[frame_id] = time.perf_counter()
            while len(self.arrived) > MAX_PENDING_FRAMES:
                self.arrived.popitem(last=False)
            await self.live.send(frame)
        except ValueError as error:
            await self._error(str(error), frame_id=frame_id)
        except TetherError as error:
            await self._session_ended(error)

    async def _read(self, live: Any) -> None:
        """Results and per-frame errors of one session, to the host and the viewers."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for event in live:
                if isinstance(event, LiveResult):
                    arrived = self._forget_up_to(event.frame_id)
                    lag_ms = (time.perf_counter() - arrived) * 1000 if arrived else 0.0
                    message = pack_result(event, lag_ms)
                    self.bridge.broadcast(message)
                    await self.websocket.send(message)
                else:
                    self.arrived.pop(event.frame_id, None)
                    await self._error(event.message, frame_id=event.frame_id)
        except TetherError as error:
            if self.live is live:
                await self._session_ended(error)
        except ConnectionClosed:
            pass  # the host went; run() ends the session

    def _forget_up_to(self, frame_id: int) -> float | None:
        """The arrival time of `frame_id`; frames before it were dropped or answered."""
        arrived = self.arrived.pop(frame_id, None)
        for older in [key for key in self.arrived if key < frame_id]:
            del self.arrived[older]
        return arrived

    async def _session_ended(self, error: TetherError) -> None:
        if self.live is not None:
            self.live.cancel()
            self.live = None
        await self._error(f"session ended: {error}", code=error.code, ended=True)

    async def _end(self) -> None:
        """The host went: cancel the call, so that the server ends the session now."""
        if self.live is not None:
            self.live.cancel()
            self.live = None
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader

    async def _error(self, message: str, **fields: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        text = error_message(message, **fields)
        self.bridge.broadcast(text)
        with contextlib.suppress(ConnectionClosed):
            await self.websocket.send(text)


def _frame_id(message: bytes) -> int:
    """The frame id of a malformed frame, when its header got that far (for its error)."""
    if len(message) >= FRAME_HEADER.size and message[:4] == FRAME_MAGIC:
        return FRAME_HEADER.unpack_from(message)[1]
    return 0


# --- running it ---------------------------------------------------------------------


def _websockets() -> Any:
    try:
        import websockets.asyncio.server
    except ImportError as error:
        raise ImportError(
            "tether bridge needs the websockets package: pip install 'tether[bridge]'"
        ) from error
    return websockets.asyncio.server


async def serve(
    server: str = connection.DEFAULT_TARGET,
    *,
    token: str | None = None,
    tls: connection.TLS = False,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allowed_origins: Sequence[str] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Future | None = None,
) -> None:
    """Run a bridge until `stop` is done (forever without one). `ready(port)` is called
    once it listens (port 0 picks a free one)."""
    from .aio import Client

    ws_server = _websockets()
    async with Client(server, token=token, tls=tls) as client:
        bridge = Bridge(client, allowed_origins)
        async with ws_server.serve(
            bridge.handle,
            host,
            port,
            process_request=bridge.process_request,
            max_size=max_message_bytes,
            # Frames and images are incompressible or already compressed; Godot does not
            # negotiate compression anyway.
            compression=None,
        ) as listening:
            if ready is not None:
                ready(listening.sockets[0].getsockname()[1])
            await (stop if stop is not None else asyncio.get_running_loop().create_future())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tether bridge`."""
    connection.add_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser pages from this origin connect (e.g. http://localhost:8060 for a "
        "Godot web export; * for any); the bridge's own page always may",
    )
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=MAX_MESSAGE_BYTES / 2**20,
        help="largest frame message in MiB",
    )


def main(args: argparse.Namespace) -> int:
    """Run `tether bridge` until interrupted; 0 on a clean stop."""
    try:
        _websockets()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}: anyone who can reach this port can use the "
            "Tether server through the bridge",
            file=sys.stderr,
        )

    def ready(port: int) -> None:
        base = f"{args.host}:{port}"
        print(
            f"tether bridge: hosts connect to ws://{base}{HOST_PATH}, viewer at http://{base}/ "
            f"(server {args.server})",
            flush=True,
        )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
                loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        await serve(
            args.server,
            token=args.token,
            tls=args.tls,
            host=args.host,
            port=args.port,
            allowed_origins=args.allow_origin,
            max_message_bytes=int(args.max_message_mb * 2**20),
            ready=ready,
            stop=stop,
        )

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as error:  # e.g. the port is taken
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


# The viewer page: one file, no dependencies. It parses the result header exactly as the
# docstring above describes and writes its counters into the DOM (the tests read them).
VIEWER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tether live</title>
<style>
  body { margin: 0; background: #15161a; color: #ddd; font: 14px system-ui, sans-serif; }
  header { display: flex; flex-wrap: wrap; gap: 1.2em; padding: 0.6em 1em; background: #202228; }
  header b { color: #fff; font-variant-numeric: tabular-nums; }
  main { display: flex; justify-content: center; padding: 1em; }
  canvas { max-width: 100%; image-rendering: pixelated; background: #000;
           min-width: 256px; min-height: 256px; }
  #error { color: #f77; padding: 0 1em; }
</style>
</head>
<body>
<header>
  <span>state <b id="state">connecting</b></span>
  <span>hosts <b id="hosts">0</b></span>
  <span>frames <b id="frames">0</b></span>
  <span>fps <b id="fps">-</b></span>
  <span>lag <b id="lag">-</b> ms</span>
  <span>server <b id="latency">-</b> ms</span>
  <span>dropped <b id="dropped">0</b></span>
  <span>frame <b id="frame-id">-</b></span>
  <span>size <b id="size">-</b></span>
  <span id="reused"></span>
</header>
<div id="error"></div>
<main><canvas id="view" width="256" height="256"></canvas></main>
<script>
"use strict";
const RESULT_MAGIC = 0x31524C54;  // "TLR1" read as a little-endian u32
const HEADER_BYTES = 40;
const MIME = {1: "image/png", 2: "image/jpeg", 3: "image/webp"};
const RAW = 4;
const $ = (id) => document.getElementById(id);
const canvas = $("view");
const ctx = canvas.getContext("2d");
let frames = 0;
let arrivals = [];   // performance.now() of recent results, for fps
let queue = Promise.resolve();  // results drawn in order, one at a time

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/viewer`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { $("state").textContent = "connected"; };
  ws.onclose = () => {
    $("state").textContent = "disconnected";
    setTimeout(connect, 1000);
  };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      note(JSON.parse(event.data));
    } else {
      queue = queue.then(() => show(event.data)).catch((e) => { $("error").textContent = e; });
    }
  };
}

function note(message) {
  if (message.type === "status") {
    $("hosts").textContent = message.hosts;
  } else if (message.type === "error") {
    $("error").textContent = `frame ${message.frame_id}: ${message.message}`;
  }
}

async function show(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < HEADER_BYTES || view.getUint32(0, true) !== RESULT_MAGIC) {
    throw new Error("not a result message");
  }
  const frameId = view.getUint32(4, true);
  const format = view.getUint32(8, true);
  const width = view.getUint32(12, true);
  const height = view.getUint32(16, true);
  const dropped = view.getUint32(20, true);
  const latency = view.getFloat32(24, true);
  const lag = view.getFloat32(28, true);
  const reused = (view.getUint32(32, true) & 1) !== 0;
  const length = view.getUint32(36, true);
  const bytes = new Uint8Array(buffer, HEADER_BYTES, length);
  if (format === RAW) {
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const image = ctx.createImageData(width, height);
    const rgba = image.data;
    for (let i = 0, j = 0; i < width * height * 3; i += 3, j += 4) {
      rgba[j] = bytes[i]; rgba[j + 1] = bytes[i + 1]; rgba[j + 2] = bytes[i + 2];
      rgba[j + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  } else {
    const bitmap = await createImageBitmap(new Blob([bytes], {type: MIME[format]}));
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
  }
  const now = performance.now();
  frames += 1;
  arrivals.push(now);
  arrivals = arrivals.filter((t) => now - t < 5000).slice(-30);
  const span = (arrivals[arrivals.length - 1] - arrivals[0]) / 1000;
  $("frames").textContent = frames;
  $("fps").textContent = arrivals.length > 1 && span > 0
    ? ((arrivals.length - 1) / span).toFixed(1) : "-";
  $("lag").textContent = lag.toFixed(1);
  $("latency").textContent = latency.toFixed(1);
  $("dropped").textContent = dropped;
  $("frame-id").textContent = frameId;
  $("size").textContent = `${canvas.width}x${canvas.height}`;
  $("reused").textContent = reused ? "reused" : "";
  $("error").textContent = "";
}

connect();
</script>
</body>
</html>
"""


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="tether bridge", description=__doc__.split("\n")[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
