"""Request images to engine arrays and engine arrays to reply images.

Raw buffers are parsed by the SDK's own code (`tether.images`), so host and server read
them identically. An image's size is read from the message alone (`size`: a raw image's
fields, an encoded file's header) and checked before any pixel is decoded: only PNG, JPEG
and WebP, and only up to a pixel limit (a small file can claim a huge canvas).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from tether import images as sdk_images
from tether._proto.tether.v1 import image_pb2

from .errors import InvalidArgument, invalid

_PIL_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WEBP"}
_ENCODERS = {
    image_pb2.IMAGE_FORMAT_UNSPECIFIED: ("PNG", {"compress_level": 1}),
    image_pb2.IMAGE_FORMAT_PNG: ("PNG", {"compress_level": 1}),
    image_pb2.IMAGE_FORMAT_JPEG: ("JPEG", {"quality": 90}),
    image_pb2.IMAGE_FORMAT_WEBP: ("WEBP", {"quality": 90}),
}
# Largest side an encoded format holds (libwebp's and libjpeg's limits); PNG and raw: none.
MAX_SIDES = {image_pb2.IMAGE_FORMAT_JPEG: 65500, image_pb2.IMAGE_FORMAT_WEBP: 16383}
# What decoding a file may raise besides a size refusal: malformed or truncated data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def size(image: image_pb2.Image, field: str, max_pixels: int) -> tuple[int, int]:
    """The image's (width, height), from the message alone: nothing is decoded. Refused
    when empty, not PNG/JPEG/WebP, or over `max_pixels`."""
    kind = image.WhichOneof("kind")
    if kind is None:
        raise invalid(field, "is empty; set `encoded` (PNG/JPEG/WebP bytes) or `raw`")
    if kind == "raw":
        width, height = image.raw.width, image.raw.height
    else:
        with _open(image.encoded, field, max_pixels) as file:
            width, height = file.size
    if width < 1 or height < 1:
        raise invalid(field, f"is {width}x{height}; width and height must be at least 1")
    if width * height > max_pixels:
        raise invalid(field, f"{width}x{height} is over this server's limit of {max_pixels} pixels")
    return width, height


def decode(image: image_pb2.Image, field: str, max_pixels: int) -> np.ndarray:
    """Image message -> (H, W, C) array: uint8 or float32, as sent. C is 1, 3 or 4. Its
    `size` is checked first."""
    size(image, field, max_pixels)
    if image.WhichOneof("kind") == "raw":
        try:
            array = sdk_images.array_from_raw(image.raw, field)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        return array.astype(np.float32) if array.dtype.kind == "f" else array
    with _open(image.encoded, field, max_pixels) as file:
        try:
            if file.mode in ("L", "RGB", "RGBA"):
                array = np.asarray(file)
            else:
                array = np.asarray(file.convert("RGBA" if "A" in file.getbands() else "RGB"))
        except _DECODE_ERRORS as error:
            raise _undecodable(field, file.format, error) from None
    return array[:, :, None] if array.ndim == 2 else array


def to_rgb(array: np.ndarray, field: str) -> np.ndarray:
    """(H, W, C) -> (H, W, 3) float32 in [0, 1]: grey repeated, alpha dropped, uint8 / 255
    (as diffusers' image processor does)."""
    if array.dtype == np.uint8:
        rgb = array.astype(np.float32) / 255.0
    else:
        if not np.isfinite(array).all():
            raise invalid(field, "contains NaN or infinity; a control map must be finite 0..1")
        rgb = np.clip(array, 0.0, 1.0)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[:, :, :3])


def encode(pixels: np.ndarray, fmt: int, message: image_pb2.Image) -> None:
    """(H, W, 3) float in [0, 1] -> `message` (a field of the response being built), in the
    requested format, 8 bits per channel, rounded as diffusers' numpy_to_pil does. Filled in
    place: protobuf copies a finished sub-message handed to a constructor byte by byte."""
    rgb8 = (pixels * 255).round().astype(np.uint8)
    if fmt == image_pb2.IMAGE_FORMAT_RAW:
        sdk_images.write_raw(message.raw, rgb8)
        return
    name, settings = _ENCODERS[fmt]
    buffer = io.BytesIO()
    PILImage.fromarray(rgb8).save(buffer, format=name, **settings)
    message.encoded = buffer.getvalue()


def _open(data: bytes, field: str, max_pixels: int) -> PILImage.Image:
    """The file opened lazily: its header read, its pixels not decoded."""
    fmt = sdk_images.encoded_format(data)
    if fmt is None:
        raise invalid(f"{field}.encoded", "must be a PNG, JPEG or WebP file")
    try:
        return PILImage.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except PILImage.DecompressionBombError:
        # Pillow's own limit, far above ours, refuses the header before `size` sees it.
        raise invalid(
            field, f"the file's header claims over this server's limit of {max_pixels} pixels"
        ) from None
    except _DECODE_ERRORS as error:
        raise _undecodable(field, fmt, error) from None


def _undecodable(field: str, fmt: str, error: Exception) -> InvalidArgument:
    return invalid(f"{field}.encoded", f"cannot be decoded as {fmt}: {error}")
