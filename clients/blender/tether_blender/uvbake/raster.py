"""Which pixel centres lie inside which triangles: a rasteriser in numpy, used in UV
space (texel centres) and in a camera's picture (pixel centres) alike.

Coordinates are in pixels, x to the right and y down from the top-left corner of the
grid; pixel (column c, row r) has its centre at (c + 0.5, r + 0.5). Triangles are
processed in chunks of at most `CHUNK` candidate pixels (their bounding boxes), so memory
stays bounded whatever the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHUNK", "Fragments", "rasterise"]

# Candidate pixels per chunk: about 200 MB of temporaries at most.
CHUNK = 1 << 22
# A centre this close outside an edge (in barycentric terms) still counts as inside, so
# that centres exactly on an edge are never lost to rounding.
_EDGE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Fragments:
    """The pixel centres covered by triangles. A centre on an edge shared by two triangles
    (or inside overlapping triangles) appears once per triangle; callers pick one."""

    triangle: np.ndarray  # (N,) int64: index of the triangle
    pixel: np.ndarray  # (N,) int64: row * width + column
    barycentric: np.ndarray  # (N, 3) float64: weights of the triangle's corners there


def rasterise(corners: np.ndarray, width: int, height: int) -> Fragments:
    """The pixel centres of a ``width`` x ``height`` grid inside each triangle of
    ``corners`` ((T, 3, 2) positions in pixels). Triangles without area cover nothing."""
    corners = np.asarray(corners, dtype=np.float64)
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area = _cross(b - a, c - a)
    low = np.ceil(corners.min(axis=1) - 0.5).astype(np.int64)
    high = np.floor(corners.max(axis=1) - 0.5).astype(np.int64)
    low = np.maximum(low, 0)
    high = np.minimum(high, [width - 1, height - 1])
    span = np.maximum(high - low + 1, 0)
    counts = span[:, 0] * span[:, 1]
    counts[np.abs(area) <= 1e-12] = 0

    parts: list[Fragments] = []
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        # At least one triangle per chunk, however large its box.
        budget = (ends[start - 1] if start else 0) + CHUNK
        stop = max(int(np.searchsorted(ends, budget, side="right")), start + 1)
        parts.append(_chunk(corners, area, low, span, counts, start, stop, width))
        start = stop
    if not parts:
        return Fragments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float64))
    return Fragments(
        triangle=np.concatenate([p.triangle for p in parts]),
        pixel=np.concatenate([p.pixel for p in parts]),
        barycentric=np.concatenate([p.barycentric for p in parts]),
    )


def _chunk(
    corners: np.ndarray,
    area: np.ndarray,
    low: np.ndarray,
    span: np.ndarray,
    counts: np.ndarray,
    start: int,
    stop: int,
    width: int,
) -> Fragments:
    """Fragments of the triangles start..stop-1: every centre of each bounding box, tested."""
    chunk_counts = counts[start:stop]
    triangle = np.repeat(np.arange(start, stop, dtype=np.int64), chunk_counts)
    first = np.cumsum(chunk_counts) - chunk_counts
    local = np.arange(len(triangle), dtype=np.int64) - np.repeat(first, chunk_counts)
    columns = low[triangle, 0] + local % span[triangle, 0]
    rows = low[triangle, 1] + local // span[triangle, 0]
    centre = np.stack([columns + 0.5, rows + 0.5], axis=1)

    a, b, c = (corners[triangle, k] for k in range(3))
    weight_a = _cross(b - centre, c - centre) / area[triangle]
    weight_b = _cross(c - centre, a - centre) / area[triangle]
    barycentric = np.stack([weight_a, weight_b, 1.0 - weight_a - weight_b], axis=1)
    inside = (barycentric >= -_EDGE_TOLERANCE).all(axis=1)
    return Fragments(
        triangle=triangle[inside],
        pixel=(rows * width + columns)[inside],
        barycentric=barycentric[inside],
    )


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The z component of the cross product of 2D vectors (rows)."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
