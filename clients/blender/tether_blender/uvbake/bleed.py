"""Grow filled pixels into their empty neighbours: the margin ("bleed") around UV islands
that keeps texture filtering and mipmaps from reaching the empty texture between them,
and the colours that continue a picture into the region an inpainting request repaints."""

from __future__ import annotations

import numpy as np

__all__ = ["dilate"]

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def dilate(values: np.ndarray, filled: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` rings of growth: each empty pixel next to a filled one (of its 8
    neighbours) takes the mean of its filled neighbours. ``values`` is (H, W, C),
    ``filled`` (H, W) bool; returns new arrays (float64 values), the originals untouched."""
    values = np.asarray(values, dtype=np.float64).copy()
    filled = np.asarray(filled, dtype=bool).copy()
    height, width = filled.shape
    for _ in range(steps):
        if filled.all():
            break
        padded_values = np.pad(values * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        padded_filled = np.pad(filled, 1).astype(np.float64)
        total = np.zeros_like(values)
        count = np.zeros(filled.shape, dtype=np.float64)
        for dy, dx in _NEIGHBOURS:
            rows = slice(1 + dy, 1 + dy + height)
            columns = slice(1 + dx, 1 + dx + width)
            total += padded_values[rows, columns]
            count += padded_filled[rows, columns]
        grow = ~filled & (count > 0)
        if not grow.any():
            break
        values[grow] = total[grow] / count[grow][:, None]
        filled |= grow
    return values, filled
