"""Krita pixel buffers <-> float RGBA arrays, for every colour space the plugin accepts.

Krita hands out raw bytes in the document's colour space (`Node.pixelData`,
`Document.pixelData`) and takes them back the same way (`Node.setPixelData`). Their
layout, checked against Krita 5.1:

- RGBA 8-bit and 16-bit integer: B, G, R, A (Krita's "BGR" integer traits), unsigned,
  little-endian.
- RGBA 16-bit and 32-bit float: R, G, B, A, little-endian half / single floats.
- GRAYA at any depth: grey, alpha.

Alpha is straight (not premultiplied). The models want sRGB-encoded colour, so documents
with a linear profile (Krita's "-g10" profiles, scRGB, anything named linear, the default
for float documents) are encoded to sRGB on the way in and decoded on the way out.
Float values outside 0..1 (HDR) are clipped: the model cannot represent them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tether.background import UserError

# (colour depth id) -> numpy dtype of one channel, little-endian as Krita stores it.
_DTYPES = {
    "U8": np.dtype(np.uint8),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
}
_CHANNELS = {"RGBA": 4, "GRAYA": 2}
# Profile names that mean linear light (gamma 1.0).
_LINEAR_MARKERS = ("g10", "linear", "scrgb")
# Rec. 709 luma, for turning the model's RGB back into grey.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


class UnsupportedColorSpace(UserError):
    """The document's colour model or depth is one the plugin cannot convert."""


@dataclass(frozen=True)
class PixelFormat:
    """How one document's pixels are laid out: Krita's colour model id ("RGBA",
    "GRAYA"), depth id ("U8", "U16", "F16", "F32") and whether its profile is linear."""

    model: str
    depth: str
    linear: bool

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.depth]

    @property
    def channels(self) -> int:
        return _CHANNELS[self.model]

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"


def pixel_format(color_model: str, color_depth: str, profile: str) -> PixelFormat:
    """The format of a document from `colorModel()`, `colorDepth()` and `colorProfile()`;
    raises UnsupportedColorSpace with a message for the user for anything else."""
    if color_model not in _CHANNELS or color_depth not in _DTYPES:
        raise UnsupportedColorSpace(
            f"Tether works on RGB and greyscale images; this one is {color_model} "
            f"{color_depth}. Convert it with Image > Convert Image Color Space (RGB/Alpha) "
            "and try again."
        )
    linear = any(marker in profile.lower() for marker in _LINEAR_MARKERS)
    return PixelFormat(color_model, color_depth, linear)


def decode(data: bytes, width: int, height: int, fmt: PixelFormat) -> np.ndarray:
    """Krita bytes -> float32 (height, width, 4) straight RGBA in 0..1, sRGB-encoded."""
    expected = width * height * fmt.bytes_per_pixel
    if len(data) != expected:
        raise ValueError(
            f"pixel data has {len(data)} bytes, expected {expected} for {width}x{height} "
            f"{fmt.model} {fmt.depth}"
        )
    raw = np.frombuffer(data, dtype=fmt.dtype).reshape(height, width, fmt.channels)
    values = _to_unit(raw, fmt)
    if fmt.model == "GRAYA":
        grey, alpha = values[:, :, :1], values[:, :, 1:]
        rgba = np.concatenate([grey, grey, grey, alpha], axis=2)
    elif fmt.is_float:
        rgba = values
    else:
        rgba = values[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    rgba = np.clip(rgba, 0.0, 1.0)
    if fmt.linear:
        rgba[:, :, :3] = linear_to_srgb(rgba[:, :, :3])
    return np.ascontiguousarray(rgba, dtype=np.float32)


def encode(rgba: np.ndarray, fmt: PixelFormat) -> bytes:
    """float (H, W, 4) straight RGBA in 0..1, sRGB-encoded -> Krita bytes in `fmt`."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected an (H, W, 4) RGBA array, got shape {rgba.shape}")
    values = np.clip(rgba.astype(np.float32), 0.0, 1.0)
    if fmt.linear:
        values[:, :, :3] = srgb_to_linear(values[:, :, :3])
    if fmt.model == "GRAYA":
        grey = values[:, :, :3] @ _LUMA
        channels = np.stack([grey, values[:, :, 3]], axis=2)
    elif fmt.is_float:
        channels = values
    else:
        channels = values[:, :, [2, 1, 0, 3]]  # RGBA -> BGRA
    return _from_unit(channels, fmt).tobytes()


def flatten(rgba: np.ndarray, background: float = 1.0) -> np.ndarray:
    """Straight RGBA -> RGB over a plain grey level (white by default, like a new Krita
    canvas), so transparent parts of the image reach the model as paper, not black."""
    alpha = rgba[:, :, 3:4]
    return rgba[:, :, :3] * alpha + background * (1.0 - alpha)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1) on values in 0..1."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(
        linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055
    ).astype(np.float32)


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """Inverse of `linear_to_srgb`."""
    encoded = np.clip(encoded, 0.0, 1.0)
    return np.where(
        encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4)
    ).astype(np.float32)


def _to_unit(raw: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    if fmt.is_float:
        # Krita lets float documents hold NaN and infinities; they must not reach the model.
        return np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return raw.astype(np.float32) / np.float32(np.iinfo(fmt.dtype).max)


def _from_unit(values: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    if fmt.is_float:
        return values.astype(fmt.dtype)
    top = np.iinfo(fmt.dtype).max
    return np.rint(values * top).astype(fmt.dtype)
