"""The bridge's messages as bytes and JSON: frames in, results and errors out.

protos/bridge.md describes the format; this module is its codec. Buffers are checked and
read with `tether.images`, the SDK's own code for `tether.v1.RawImage`, and the pixel
type and format codes are `image.proto`'s enum numbers.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Sequence

import numpy as np

from .. import LiveResult, images, protocol
from .._proto.tether.v1 import image_pb2
from ..images import ImageInput

FRAME_MAGIC = b"TLF1"
RESULT_MAGIC = b"TLR1"
FRAME_HEADER = struct.Struct("<4sII")  # magic, frame id, buffer count
BUFFER_DESCRIPTOR = struct.Struct("<IIIII")  # width, height, channels, pixel type, length
# magic, frame id, format, width, height, dropped, latency, lag, flags, image length
RESULT_HEADER = struct.Struct("<4sIIIIIffII")
MAX_BUFFERS = 17  # colour + 16 control units: far more than a denoising loop can use

# A buffer without a sample type is an encoded PNG/JPEG/WebP file.
PIXEL_ENCODED = image_pb2.PIXEL_TYPE_UNSPECIFIED
PIXEL_TYPE_NAMES = {
    value.number: value.name.removeprefix("PIXEL_TYPE_") if value.number else "encoded"
    for value in image_pb2.PixelType.DESCRIPTOR.values
}
# "raw", "png", "jpeg", "webp" (the names `LiveResult.format` uses) -> ImageFormat numbers.
RESULT_FORMATS = protocol.OUTPUT_FORMATS
FORMAT_NAMES = {number: name for name, number in RESULT_FORMATS.items()}
FLAG_REUSED = 1


class ProtocolError(ValueError):
    """A message from a host that breaks the wire format; the text names what is wrong, and
    `frame_id` the frame when its header got that far (0 otherwise)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, frame_id: int = 0) -> None:
        super().__init__(message)
        self.frame_id = frame_id


# --- frames -------------------------------------------------------------------------

Buffer = np.ndarray | bytes  # raw pixels (H, W), (H, W, C) or an encoded PNG/JPEG/WebP file


def pack_frame(frame_id: int, buffers: Sequence[ImageInput]) -> bytes:
    """A binary frame message: colour first, then one buffer per control unit; each buffer
    is anything the SDK takes as an image (raw arrays travel raw, files encoded)."""
    descriptors, payloads = [], []
    for i, buffer in enumerate(buffers):
        image = images.to_proto(buffer, f"buffers[{i}]")
        if image.WhichOneof("kind") == "encoded":
            descriptors.append(BUFFER_DESCRIPTOR.pack(0, 0, 0, PIXEL_ENCODED, len(image.encoded)))
            payloads.append(image.encoded)
        else:
            raw = image.raw
            descriptors.append(
                BUFFER_DESCRIPTOR.pack(
                    raw.width, raw.height, raw.channels, raw.pixel_type, len(raw.data)
                )
            )
            payloads.append(raw.data)
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
            f"unit, at most {MAX_BUFFERS}",
            frame_id,
        )
    data_start = FRAME_HEADER.size + count * BUFFER_DESCRIPTOR.size
    if len(message) < data_start:
        raise ProtocolError(
            f"frame: {len(message)} bytes, too short for the descriptors of {count} buffers "
            f"(the header ends at byte {data_start})",
            frame_id,
        )
    descriptors = [
        BUFFER_DESCRIPTOR.unpack_from(message, FRAME_HEADER.size + i * BUFFER_DESCRIPTOR.size)
        for i in range(count)
    ]
    announced = sum(descriptor[4] for descriptor in descriptors)
    if len(message) - data_start != announced:
        raise ProtocolError(
            f"frame: the descriptors announce {announced} bytes of buffers, the message "
            f"carries {len(message) - data_start}",
            frame_id,
        )
    buffers: list[Buffer] = []
    offset = data_start
    for i, (width, height, channels, pixel_type, length) in enumerate(descriptors):
        field = f"frame.buffers[{i}]" + (" (colour)" if i == 0 else f" (controls[{i - 1}])")
        payload = message[offset : offset + length]
        offset += length
        try:
            buffers.append(_buffer(field, width, height, channels, pixel_type, payload))
        except ValueError as error:
            raise ProtocolError(str(error), frame_id) from None
    return frame_id, buffers


def _buffer(
    field: str, width: int, height: int, channels: int, pixel_type: int, payload: bytes
) -> Buffer:
    if pixel_type not in PIXEL_TYPE_NAMES:
        accepted = ", ".join(f"{number} ({name})" for number, name in PIXEL_TYPE_NAMES.items())
        raise ValueError(f"{field}.pixel_type: {pixel_type}; expected {accepted}")
    if pixel_type == PIXEL_ENCODED:
        if images.encoded_format(payload) is None:
            raise ValueError(f"{field}: pixel type 0 (encoded), but not a PNG, JPEG or WebP")
        return payload
    array = images.array_from_buffer(payload, width, height, channels, pixel_type, field)
    # One channel travels as (H, W): the shape the SDK and `tether.maps` use for depth.
    return array[:, :, 0] if channels == 1 else array


# --- results ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResultMessage(LiveResult):
    """A binary result message, read back (for Python hosts and tests): the session's
    `LiveResult` and the bridge's lag (frame reached the bridge -> result left it)."""

    lag_ms: float


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


# --- text messages ------------------------------------------------------------------


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


def status_message(hosts: int, viewers: int) -> str:
    return json.dumps({"type": "status", "hosts": hosts, "viewers": viewers})
