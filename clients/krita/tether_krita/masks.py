"""Selection masks and the pixels of the result layer.

Krita's `Selection.pixelData` gives one byte per pixel, 0 = outside, 255 = fully
selected, values between for feathered or anti-aliased edges. The result layer keeps
the generated colour and takes its alpha from the selection, so everything outside the
selection stays exactly as it was and soft selection edges blend.
"""

from __future__ import annotations

import numpy as np

from .resize import resize


def selection_mask(data: bytes, width: int, height: int) -> np.ndarray:
    """Selection bytes -> float32 (height, width) coverage in 0..1."""
    if len(data) != width * height:
        raise ValueError(
            f"selection data has {len(data)} bytes, expected {width * height} for {width}x{height}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width).astype(np.float32) / 255


def full_mask(width: int, height: int) -> np.ndarray:
    """The mask of "no selection": everything is repainted."""
    return np.ones((height, width), dtype=np.float32)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in 0..1 (a mask, an image) -> uint8, rounded, for sending to the server."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def layer_pixels(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The result layer over its region: float32 (H, W, 4) straight RGBA.

    `rgb` is the generated image, float 0..1, of any size: it is scaled to the mask's
    size. Alpha is the selection coverage, so pixels outside the selection are fully
    transparent and the document looks unchanged there.
    """
    height, width = mask.shape
    scaled = resize(rgb, width, height)
    return np.concatenate([np.clip(scaled, 0.0, 1.0), mask[:, :, None]], axis=2)


def edges_pixels(edges: np.ndarray, width: int, height: int) -> np.ndarray:
    """A canny map (white lines on black, uint8 RGB, generation size) -> opaque float32
    RGBA at the region's size, for showing the map as a layer."""
    rgb = resize(edges.astype(np.float32) / 255, width, height)
    alpha = np.ones((height, width, 1), dtype=np.float32)
    return np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=2)
