"""The texels a UV map covers: for each, the point of the surface it belongs to and the
direction that surface faces.

Texel (column c, row r) of a ``size`` x ``size`` texture covers the UV square around
((c + 0.5) / size, 1 - (r + 0.5) / size): rows run from the top (v = 1) down, as in every
picture the SDK handles; Blender's own images run bottom-up and are flipped on writing.
A texel belongs to the triangle whose UV triangle contains its centre; its surface point
interpolates that triangle's world-space corners with the same barycentric weights, which
is exact for the triangulated mesh Blender renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raster import rasterise

__all__ = ["MeshData", "Texels", "texels_of", "uv_to_pixels"]


@dataclass(frozen=True)
class MeshData:
    """A mesh's triangles in world space with their UVs. Corners run counter-clockwise
    seen from the side the face's normal points to (Blender's winding)."""

    positions: np.ndarray  # (T, 3, 3) float64 world-space corners
    uvs: np.ndarray  # (T, 3, 2) float64 UVs, (0, 0) at the texture's bottom-left


@dataclass(frozen=True)
class Texels:
    """The texels of a ``size`` x ``size`` texture that lie on the mesh."""

    size: int
    index: np.ndarray  # (N,) int64: row * size + column, rows from the top
    positions: np.ndarray  # (N, 3) float64 surface points, world space
    normals: np.ndarray  # (N, 3) float64 unit normals of their triangles (0 if degenerate)

    def grid(self, values: np.ndarray, fill: float | tuple[float, ...] = 0.0) -> np.ndarray:
        """Per-texel ``values`` ((N,) or (N, C)) laid out as a (size, size[, C]) picture,
        ``fill`` where no texel lies."""
        shape = (self.size * self.size, *np.shape(values)[1:])
        grid = np.empty(shape, dtype=np.asarray(values).dtype)
        grid[...] = fill
        grid[self.index] = values
        return grid.reshape(self.size, self.size, *shape[1:])


def uv_to_pixels(uvs: np.ndarray, size: int) -> np.ndarray:
    """UVs as positions on the texel grid of `raster` (x right, y down from the top)."""
    pixels = np.empty(np.shape(uvs), dtype=np.float64)
    pixels[..., 0] = uvs[..., 0] * size
    pixels[..., 1] = (1.0 - uvs[..., 1]) * size
    return pixels


def texels_of(mesh: MeshData, size: int) -> Texels:
    """Every texel whose centre lies in one of the mesh's UV triangles. Where triangles
    overlap in UV space (or share an edge through a texel centre), the texel belongs to
    the first of them: overlapping UV islands share their texels, as in any bake."""
    fragments = rasterise(uv_to_pixels(mesh.uvs, size), size, size)
    index, first = np.unique(fragments.pixel, return_index=True)
    triangle = fragments.triangle[first]
    corners = mesh.positions[triangle]
    positions = np.einsum("nk,nkd->nd", fragments.barycentric[first], corners)
    return Texels(size=size, index=index, positions=positions, normals=face_normals(corners))


def face_normals(corners: np.ndarray) -> np.ndarray:
    """(T, 3) unit normals of triangles (T, 3, 3) with counter-clockwise corners."""
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    return np.where(length > 1e-20, normal / np.maximum(length, 1e-300), 0.0)
