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
    ``filled`` (H, W) bool; returns new arrays (float64 values), the originals untouched.
    Only the ring that grows is computed on, so a step costs little beyond its pixels."""
    values = np.asarray(values, dtype=np.float64).copy()
    filled = np.asarray(filled, dtype=bool).copy()
    height, width = filled.shape
    for _ in range(steps):
        padded = np.pad(filled, 1)
        count = np.zeros(filled.shape, dtype=np.int64)
        for dy, dx in _NEIGHBOURS:
            count += padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        rows, columns = np.nonzero(~filled & (count > 0))
        if not len(rows):
            break
        total = np.zeros((len(rows), values.shape[2]))
        for dy, dx in _NEIGHBOURS:
            # Padded coordinates: a neighbour off the grid reads the padding (never filled).
            source = padded[rows + 1 + dy, columns + 1 + dx]
            near_rows = np.clip(rows + dy, 0, height - 1)
            near_columns = np.clip(columns + dx, 0, width - 1)
            total += values[near_rows, near_columns] * source[:, None]
        values[rows, columns] = total / count[rows, columns][:, None]
        filled[rows, columns] = True
    return values, filled
