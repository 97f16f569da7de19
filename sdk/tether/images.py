"""Images in and out of `tether.v1.Image`: numpy buffers, encoded files, paths, PIL images.

Pure numpy; pillow is used only when a caller hands over a PIL image or asks to decode a
PNG/JPEG/WebP file. Raw buffers are row-major, top row first, channels interleaved,
little-endian, as the protocol says. Float buffers travel as they are: no 8-bit loss.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ._proto.tether.v1 import image_pb2

# What the SDK accepts wherever it takes an image.
ImageInput = np.ndarray | bytes | str | os.PathLike | Any  # Any: a PIL.Image.Image

PIXEL_TYPES = {
    np.dtype(np.uint8): image_pb2.PIXEL_TYPE_U8,
    np.dtype("<f2"): image_pb2.PIXEL_TYPE_F16,
    np.dtype("<f4"): image_pb2.PIXEL_TYPE_F32,
}
DTYPES = {pixel_type: dtype for dtype, pixel_type in PIXEL_TYPES.items()}

# Magic numbers of the only encoded formats the server decodes.
_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
}


def encoded_format(data: bytes) -> str | None:
    """'PNG', 'JPEG' or 'WEBP' from a file's first bytes, None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for name, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return name
    return None


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or WebP file's header, without decoding (nor pillow);
    None when the header is not one of those or is cut short."""
    try:
        fmt = encoded_format(data)
        if fmt == "PNG":
            return struct.unpack(">II", data[16:24])  # IHDR, the first chunk
        if fmt == "JPEG":
            return _jpeg_size(data)
        if fmt == "WEBP":
            return _webp_size(data)
    except struct.error:
        pass
    return None


# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the segments after SOI (each 0xFF, marker, 16-bit length) to the frame header."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
        elif marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        else:
            (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
            offset += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The first chunk of a WebP file: VP8 (lossy), VP8L (lossless) or VP8X (extended)."""
    chunk = data[12:16]
    if chunk == b"VP8 ":  # after a 3-byte frame tag and the start code 9d 01 2a
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # after the signature byte 0x2f: 14 bits width - 1, 14 bits height - 1
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # after flags and reserved bytes: 24 bits width - 1, height - 1
        (width,) = struct.unpack("<I", data[24:27] + b"\0")
        (height,) = struct.unpack("<I", data[27:30] + b"\0")
        return width + 1, height + 1
    return None


def to_proto(image: ImageInput, field: str = "image") -> image_pb2.Image:
    """Any accepted image -> `tether.v1.Image` (see `write`)."""
    message = image_pb2.Image()
    write(message, image, field)
    return message


def write(message: image_pb2.Image, image: ImageInput, field: str = "image") -> None:
    """Fill `message`, typically a field of a request being built, with any accepted image.

    numpy arrays of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) become raw buffers:
    uint8 as U8, float16 as F16, other floats as F32. bytes must be a PNG, JPEG or WebP
    file; a path is read and must be one too. A PIL image is sent raw as its pixels.

    Filling in place rather than passing a finished Image to a parent's constructor matters
    for big buffers: protobuf copies such a sub-message at about 1 ms per MB.
    """
    if isinstance(image, np.ndarray):
        write_raw(message.raw, image, field)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if encoded_format(data) is None:
            raise ValueError(f"{field}: bytes must be a PNG, JPEG or WebP file")
        message.encoded = data
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
        if encoded_format(data) is None:
            raise ValueError(
                f"{field}: {image} is not a PNG, JPEG or WebP file; for other formats "
                "(EXR, TIFF, ...) load the pixels yourself and pass a numpy array"
            )
        message.encoded = data
    elif type(image).__module__.startswith("PIL."):
        write_raw(message.raw, np.asarray(image), field)
    else:
        raise TypeError(
            f"{field}: expected a numpy array, PNG/JPEG/WebP bytes, a file path or a PIL "
            f"image, got {type(image).__name__}"
        )


def write_raw(raw: image_pb2.RawImage, array: np.ndarray, field: str = "image") -> None:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{field}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f" and array.dtype.itemsize != 2:
        array = array.astype("<f4", copy=False)
    elif array.dtype.kind == "f":
        array = array.astype("<f2", copy=False)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"{field}: pixel type {array.dtype} is not supported; use uint8 (0..255) or "
            "float16/float32 (colour in 0..1)"
        )
    raw.height, raw.width, raw.channels = array.shape
    raw.pixel_type = PIXEL_TYPES[array.dtype]
    raw.data = np.ascontiguousarray(array).tobytes()


def array_from_raw(raw: image_pb2.RawImage, field: str = "image") -> np.ndarray:
    """`RawImage` -> (H, W, C) array of its own dtype, checking the buffer's length."""
    return array_from_buffer(
        raw.data, raw.width, raw.height, raw.channels, raw.pixel_type, f"{field}.raw"
    )


def array_from_buffer(
    data: bytes, width: int, height: int, channels: int, pixel_type: int, field: str = "image"
) -> np.ndarray:
    """A raw buffer described as `RawImage` describes one -> (H, W, C) array of its own
    dtype, every field checked. For buffers that do not arrive in a `RawImage` (the bridge's
    frames), without copying them into one."""
    if pixel_type not in DTYPES:
        raise ValueError(f"{field}.pixel_type: must be U8, F16 or F32")
    if width < 1 or height < 1:
        raise ValueError(f"{field}: width and height must be at least 1")
    if channels not in (1, 3, 4):
        raise ValueError(f"{field}.channels: must be 1, 3 or 4 (got {channels})")
    dtype = DTYPES[pixel_type]
    expected = width * height * channels * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{field}.data: {len(data)} bytes, but {width}x{height}x{channels} of "
            f"{dtype.name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(height, width, channels)


def from_proto(image: image_pb2.Image, field: str = "image") -> np.ndarray:
    """`tether.v1.Image` -> numpy array: raw as stored, encoded files decoded with pillow."""
    if image.WhichOneof("kind") == "raw":
        return array_from_raw(image.raw, field)
    return decode(image.encoded, field)


def decode(data: bytes, field: str = "image") -> np.ndarray:
    """A PNG, JPEG or WebP file -> (H, W, 3) uint8, with pillow."""
    try:
        from PIL import Image as PILImage
    except ImportError as error:
        raise ImportError(
            f"{field}: decoding an encoded image needs pillow (pip install pillow); ask the "
            "server for output_format='raw' to get pixels without it"
        ) from error
    with PILImage.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"))
