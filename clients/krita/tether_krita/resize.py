"""Resampling of float images in numpy: Krita's Python has no pillow or opencv.

A separable triangle (bilinear) filter whose support widens with the scale factor when
shrinking, so downscaling averages every source pixel (no aliasing) and upscaling is
plain bilinear interpolation. Pixel centres sit at half-integer positions, as in pillow.
"""

from __future__ import annotations

import numpy as np


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` (H, W) or (H, W, C), any real dtype -> float32 of the same rank with shape
    (height, width[, C])."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"target size {width}x{height} must be positive")
    source = image.astype(np.float32, copy=False)
    in_h, in_w = source.shape[:2]
    if (in_w, in_h) == (width, height):
        return source.copy()
    rows = _weights(in_h, height)  # (height, in_h)
    cols = _weights(in_w, width)  # (width, in_w)
    # Contract rows first, then columns; tensordot keeps this a pair of matrix products.
    tall = np.tensordot(rows, source, axes=(1, 0))  # (height, in_w[, C])
    out = np.tensordot(cols, tall, axes=(1, 1))  # (width, height[, C])
    out = np.swapaxes(out, 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix whose rows are normalised triangle-filter weights."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out, dtype=np.float64) + 0.5) * scale
    positions = np.arange(size_in, dtype=np.float64) + 0.5
    distance = np.abs(positions[None, :] - centres[:, None]) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    # Every row has a source pixel within half a pixel of its centre, so sums are > 0.
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)
