"""Read the passes of an uncompressed OpenEXR file into numpy arrays.

Blender's Python API cannot read one pass of a multilayer EXR (``Image.pixels`` gives a
single pass picked by the UI), the ``bpy`` module brings no OpenEXR bindings, and the
"Render Result" image has no pixels in background mode. The add-on therefore renders to a
multilayer EXR written with ``exr_codec = "NONE"`` and reads it back here.

Supported: scanline images, single-part (Blender 4.x, or 5.x with "Interleave") and
multi-part (Blender 5.x's default: one part per pass), HALF/FLOAT/UINT channels, no
compression. Anything else raises `ExrError` naming what was found.

Rows come back top row first: OpenEXR's y axis points down, so the first scanline of the
data window is the top of the picture.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ExrError", "read_channels"]

_MAGIC = 20000630
_MULTIPART_FLAG = 0x1000
_TILED_FLAG = 0x200
_NO_COMPRESSION = 0
# OpenEXR pixel types: UINT = 0, HALF = 1, FLOAT = 2.
_PIXEL_DTYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


class ExrError(ValueError):
    """The file is not an EXR this reader understands."""


@dataclass(frozen=True)
class _Part:
    channels: list[tuple[str, np.dtype]]  # sorted by name, as stored
    x_min: int
    y_min: int
    width: int
    height: int
    chunk_count: int


def read_channels(path: str | Path) -> dict[str, np.ndarray]:
    """All channels of all parts, keyed by full channel name (e.g. "ViewLayer.Depth.Z").

    Each value is a float32 (H, W) array, top row first.
    """
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ExrError(f"{path}: too short to be an EXR file")
    magic, version = struct.unpack_from("<iI", data, 0)
    if magic != _MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file")
    if version & _TILED_FLAG:
        raise ExrError(f"{path}: tiled EXR files are not supported")
    multipart = bool(version & _MULTIPART_FLAG)

    offset = 8
    parts: list[_Part] = []
    while True:
        attributes, offset = _read_header(data, offset, path)
        parts.append(_part_from_header(attributes, path))
        if not multipart:
            break
        if data[offset] == 0:  # an empty header ends the list of parts
            offset += 1
            break

    # Skip the offset tables: scanline chunks are read in file order instead.
    offset += 8 * sum(part.chunk_count for part in parts)

    planes = {
        name: np.zeros((part.height, part.width), dtype=np.float32)
        for part in parts
        for name, _ in part.channels
    }
    for _ in range(sum(part.chunk_count for part in parts)):
        part_index = 0
        if multipart:
            (part_index,) = struct.unpack_from("<i", data, offset)
            offset += 4
        part = parts[part_index]
        y, size = struct.unpack_from("<ii", data, offset)
        offset += 8
        row = y - part.y_min
        # Uncompressed scanline chunks hold one line: each channel's samples in turn.
        position = offset
        for name, dtype in part.channels:
            count = part.width
            values = np.frombuffer(data, dtype=dtype, count=count, offset=position)
            planes[name][row] = values.astype(np.float32)
            position += count * dtype.itemsize
        if position - offset != size:
            expected = position - offset
            raise ExrError(f"{path}: chunk at line {y} has {size} bytes, expected {expected}")
        offset += size
    return planes


def _read_header(data: bytes, offset: int, path: str | Path) -> tuple[dict[str, bytes], int]:
    attributes: dict[str, bytes] = {}
    while True:
        name, offset = _read_cstring(data, offset)
        if not name:
            return attributes, offset
        _type_name, offset = _read_cstring(data, offset)
        (size,) = struct.unpack_from("<i", data, offset)
        offset += 4
        attributes[name] = data[offset : offset + size]
        offset += size
        if offset > len(data):
            raise ExrError(f"{path}: header runs past the end of the file")


def _part_from_header(attributes: dict[str, bytes], path: str | Path) -> _Part:
    for required in ("channels", "compression", "dataWindow"):
        if required not in attributes:
            raise ExrError(f"{path}: header lacks the {required!r} attribute")
    compression = attributes["compression"][0]
    if compression != _NO_COMPRESSION:
        raise ExrError(
            f"{path}: compression type {compression} is not supported; write with exr_codec NONE"
        )
    if attributes.get("type", b"scanlineimage").rstrip(b"\0") != b"scanlineimage":
        raise ExrError(f"{path}: only scanline images are supported")
    x_min, y_min, x_max, y_max = struct.unpack("<iiii", attributes["dataWindow"])
    height = y_max - y_min + 1
    chunk_count = height
    if "chunkCount" in attributes:
        (chunk_count,) = struct.unpack("<i", attributes["chunkCount"])
    return _Part(
        channels=_parse_channels(attributes["channels"], path),
        x_min=x_min,
        y_min=y_min,
        width=x_max - x_min + 1,
        height=height,
        chunk_count=chunk_count,
    )


def _parse_channels(raw: bytes, path: str | Path) -> list[tuple[str, np.dtype]]:
    channels: list[tuple[str, np.dtype]] = []
    offset = 0
    while raw[offset] != 0:
        name, offset = _read_cstring(raw, offset)
        # pixel type, pLinear (1 byte) + 3 reserved bytes, x and y sampling.
        pixel_type, _linear, x_sampling, y_sampling = struct.unpack_from("<iB3xii", raw, offset)
        offset += 16
        if pixel_type not in _PIXEL_DTYPES:
            raise ExrError(f"{path}: channel {name!r} has unknown pixel type {pixel_type}")
        if (x_sampling, y_sampling) != (1, 1):
            raise ExrError(f"{path}: channel {name!r} is subsampled; not supported")
        channels.append((name, _PIXEL_DTYPES[pixel_type]))
    return channels


def _read_cstring(data: bytes, offset: int) -> tuple[str, int]:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("utf-8"), end + 1
