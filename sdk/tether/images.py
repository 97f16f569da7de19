"""Images in and out of `tether.v1.Image`: numpy buffers, encoded files, paths, PIL images.

Pure numpy; pillow is used only when a caller hands over a PIL image or asks to decode a
PNG/JPEG/WebP file. Raw buffers are row-major, top row first, channels interleaved,
little-endian, as the protocol says. Float buffers travel as they are: no 8-bit loss.
"""

from __future__ import annotations

import io
import os
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
    try:
        from PIL import Image as PILImage
    except ImportError as error:
        raise ImportError(
            f"{field}: decoding an encoded image needs pillow (pip install pillow); ask the "
            "server for output_format='raw' to get pixels without it"
        ) from error
    with PILImage.open(io.BytesIO(image.encoded)) as decoded:
        return np.asarray(decoded.convert("RGB"))
