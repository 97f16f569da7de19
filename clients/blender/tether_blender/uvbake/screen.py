"""Which target surface each pixel of a view shows, and where on its UV map.

The targets' triangles are rasterised into the view's picture with perspective-correct
interpolation, after clipping away what lies behind the camera. A pixel shows a target
where the view's Depth pass there equals the target's depth (within the tolerance of
`visibility`): anything in front of it, the target itself or any other object, hides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .camera import ViewCamera
from .raster import rasterise
from .texels import MeshData
from .visibility import depth_tolerance

__all__ = ["NEAR", "PixelSurfaces", "clip_in_front", "surfaces_in_view"]

# Planar depth (world units) under which geometry counts as behind the camera.
NEAR = 1e-6


@dataclass(frozen=True)
class PixelSurfaces:
    """Per pixel of a view (row * width + column, top row first)."""

    target: np.ndarray  # (H * W,) int64: index of the target it shows, -1 = none
    uv: np.ndarray  # (H * W, 2) float64: the UV it shows (0 where target is -1)


def surfaces_in_view(
    meshes: Sequence[MeshData], camera: ViewCamera, depth: np.ndarray
) -> PixelSurfaces:
    """What each pixel of ``camera``'s picture shows of ``meshes``, given the view's Depth
    pass ``depth`` ((H, W), top row first)."""
    count = camera.width * camera.height
    target = np.full(count, -1, dtype=np.int64)
    uv = np.zeros((count, 2), dtype=np.float64)
    best = np.full(count, np.inf)
    flat_depth = np.asarray(depth, dtype=np.float64).ravel()
    for index, mesh in enumerate(meshes):
        positions, uvs = clip_in_front(mesh.positions, mesh.uvs, camera, NEAR)
        if not len(positions):
            continue
        points = positions.reshape(-1, 3)
        x, y, w = camera.project(points)
        z = camera.planar_depth(points).reshape(-1, 3)
        corners = np.stack([x, y], axis=1).reshape(-1, 3, 2)
        fragments = rasterise(corners, camera.width, camera.height)
        # Screen-space barycentric weights over w: perspective-correct on the surface.
        weights = fragments.barycentric / w.reshape(-1, 3)[fragments.triangle]
        weights /= weights.sum(axis=1, keepdims=True)
        fragment_depth = np.einsum("nk,nk->n", weights, z[fragments.triangle])
        error = np.abs(flat_depth[fragments.pixel] - fragment_depth)
        shown = error <= depth_tolerance(camera, fragment_depth)
        # Per pixel, the fragment nearest the Depth pass, if nearer than other targets'.
        candidates = np.nonzero(shown)[0]
        candidates = candidates[np.lexsort((error[candidates], fragments.pixel[candidates]))]
        chosen = candidates[np.unique(fragments.pixel[candidates], return_index=True)[1]]
        pixel = fragments.pixel[chosen]
        better = error[chosen] < best[pixel]
        pixel, chosen = pixel[better], chosen[better]
        best[pixel] = error[chosen]
        target[pixel] = index
        uv[pixel] = np.einsum("nk,nkd->nd", weights[chosen], uvs[fragments.triangle[chosen]])
    return PixelSurfaces(target=target, uv=uv)


def clip_in_front(
    positions: np.ndarray, uvs: np.ndarray, camera: ViewCamera, near: float
) -> tuple[np.ndarray, np.ndarray]:
    """The parts of triangles ((T, 3, 3) positions, (T, 3, 2) UVs) at planar depth
    ``near`` or more: a triangle with one corner behind becomes two, one with two corners
    behind becomes a smaller one, one entirely behind goes. Winding is kept."""
    depth = camera.planar_depth(positions.reshape(-1, 3)).reshape(-1, 3)
    behind = depth < near
    behind_count = behind.sum(axis=1)
    corners = np.concatenate([positions, uvs], axis=2)  # clip both alike
    parts = [corners[behind_count == 0]]
    for count in (1, 2):
        selected = behind_count == count
        # The corner on its own side first (behind for one, in front for two), winding kept.
        odd = behind[selected] if count == 1 else ~behind[selected]
        order = (np.argmax(odd, axis=1)[:, None] + np.arange(3)) % 3
        c = np.take_along_axis(corners[selected], order[:, :, None], axis=1)
        d = np.take_along_axis(depth[selected], order, axis=1)
        a_to_b = c[:, 0] + (c[:, 1] - c[:, 0]) * ((near - d[:, 0]) / (d[:, 1] - d[:, 0]))[:, None]
        a_to_c = c[:, 0] + (c[:, 2] - c[:, 0]) * ((near - d[:, 0]) / (d[:, 2] - d[:, 0]))[:, None]
        if count == 1:
            parts.append(np.stack([a_to_b, c[:, 1], c[:, 2]], axis=1))
            parts.append(np.stack([a_to_b, c[:, 2], a_to_c], axis=1))
        else:
            parts.append(np.stack([c[:, 0], a_to_b, a_to_c], axis=1))
    clipped = np.concatenate(parts)
    return clipped[:, :, :3], clipped[:, :, 3:]
