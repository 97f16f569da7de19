"""Resampling of float images in numpy: Krita's Python has no pillow or opencv.

A separable triangle (bilinear) filter whose support widens with the scale factor when
shrinking, so downscaling averages every source pixel (no aliasing) and upscaling is
plain bilinear interpolation. Pixel centres sit at half-integer positions, as in pillow.

Each output pixel reads only the few source pixels under its filter ("taps"), so the cost
grows with the image, not with its square: a 4000x3000 canvas scaled by a few pixels (a
large canvas fitted to multiples of 8) takes about a second.
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
    tall = _resample(source, height, axis=0)
    return _resample(tall, width, axis=1)


def _resample(source: np.ndarray, size_out: int, axis: int) -> np.ndarray:
    """`source` resampled to `size_out` along `axis` (0: rows, 1: columns)."""
    size_in = source.shape[axis]
    if size_in == size_out:
        return source
    index, weights = _taps(size_in, size_out)
    shape = [1] * source.ndim
    shape[axis] = size_out
    out = np.zeros((*source.shape[:axis], size_out, *source.shape[axis + 1 :]), dtype=np.float32)
    for tap in range(index.shape[1]):
        picked = np.take(source, index[:, tap], axis=axis)
        out += picked * weights[:, tap].reshape(shape)
    return out


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel, the source pixels under its triangle filter and their
    normalised weights: two (size_out, taps) arrays. Taps that fall off the image get
    weight 0 (and a valid index)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out, dtype=np.float64) + 0.5) * scale
    # A source pixel i (centre i + 0.5) counts when |i + 0.5 - centre| < support.
    first = np.floor(centres - support - 0.5).astype(np.int64)
    count = int(np.ceil(2 * support)) + 2
    index = first[:, None] + np.arange(count)[None, :]
    distance = np.abs(index + 0.5 - centres[:, None]) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    weights[(index < 0) | (index >= size_in)] = 0.0
    # Every row has a source pixel within half a pixel of its centre, so sums are > 0.
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(index, 0, size_in - 1), weights.astype(np.float32)
