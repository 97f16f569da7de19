"""Which texels a view sees, at which pixels, and how well.

A texel is seen by a view when:

1. its surface point is in front of the camera and inside the picture;
2. its face looks toward the camera, within the maximum angle: back faces, and faces seen
   almost edge-on, take nothing from the view;
3. at least one of the four pixel centres around its position in the picture shows its
   own surface: the view's Depth pass there equals the depth at which that pixel's ray
   meets the plane of the texel's triangle. Anything in front of the surface (the object
   itself or any other object) makes the Depth pass nearer; past a silhouette it is
   farther (or Blender's no-hit value).

The Depth pass is what the picture was generated from, so this is the same occlusion the
picture shows, including objects that are not being textured. A texel's colour is the
bilinear interpolation of those four pixels, restricted to the ones that show its surface
(their weights renormalised), so the colour of an occluder never bleeds onto what it
hides. The share of bilinear weight that does show the surface is the texel's coverage: 1
inside a visible area, falling to 0 across silhouettes, which fades the view out there.

Blend weight: coverage times the texel's area in the picture, in pixels, which is
cos(angle) / (cos(off_axis) * pixel_size**2) per unit of surface: the angle between the
face's normal and the direction to the camera, off_axis the angle between that direction
and the view axis (0 for an orthographic camera), pixel_size the width of a pixel at the
texel's planar depth. Views that see a texel head-on and from close by weigh most, grazing
and distant ones least.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import ViewCamera
from .texels import Texels

__all__ = ["Observation", "depth_tolerance", "observe"]

# See depth_tolerance.
_RELATIVE_TOLERANCE = 1e-3
_PIXEL_TOLERANCE = 0.5
# Texels examined at once (each needs four rays): bounds the temporaries to ~100 MB.
_BATCH = 1 << 18


@dataclass(frozen=True)
class Observation:
    """What one view shows of each texel (rows in the order of `Texels.index`)."""

    pixels: np.ndarray  # (N, 4) int64: the four pixels around it, row * width + column
    weights: np.ndarray  # (N, 4) float64: their colour weights, summing to 1 (0 if unseen)
    weight: np.ndarray  # (N,) float64: blend weight, 0 where the view does not see it

    @property
    def seen(self) -> np.ndarray:
        return self.weight > 0

    def colours(self, picture: np.ndarray) -> np.ndarray:
        """(N, C) float64 colours of the texels in ``picture`` ((H, W, C), top row first);
        0 where unseen."""
        flat = np.asarray(picture).reshape(-1, np.shape(picture)[-1]).astype(np.float64)
        return np.einsum("nk,nkc->nc", self.weights, flat[self.pixels])


def observe(texels: Texels, camera: ViewCamera, depth: np.ndarray, max_angle: float) -> Observation:
    """What ``camera`` sees of ``texels``, given the view's Depth pass ``depth`` ((H, W)
    planar depth, top row first, anything >= 1e10 = nothing) and ``max_angle`` (radians):
    faces seen more obliquely than this take nothing from the view."""
    count = len(texels.index)
    pixels = np.zeros((count, 4), dtype=np.int64)
    weights = np.zeros((count, 4), dtype=np.float64)
    weight = np.zeros(count, dtype=np.float64)

    x, y, w = camera.project(texels.positions)
    z = camera.planar_depth(texels.positions)
    toward = camera.toward_camera(texels.positions)
    cos = np.einsum("nd,nd->n", texels.normals, toward)
    cos_off_axis = -toward @ camera.forward
    candidates = np.nonzero(
        (z > 0)
        & (w > 0)
        & (cos >= np.cos(max_angle))
        & (x >= 0)
        & (x <= camera.width)
        & (y >= 0)
        & (y <= camera.height)
    )[0]
    flat_depth = np.asarray(depth, dtype=np.float64).ravel()
    rays = camera.pixel_rays()
    for start in range(0, len(candidates), _BATCH):
        rows = candidates[start : start + _BATCH]
        corner_pixels, bilinear = _corners(x[rows], y[rows], camera.width, camera.height)
        plane = _plane_depths(
            camera, rays, corner_pixels, texels.positions[rows], texels.normals[rows]
        )
        size = camera.pixel_size(z[rows])
        tolerance = depth_tolerance(camera, z[rows])
        shows = np.abs(flat_depth[corner_pixels] - plane) <= tolerance[:, None]
        shown = np.where(shows, bilinear, 0.0)
        coverage = shown.sum(axis=1)
        visible = coverage > 0
        pixels[rows] = corner_pixels
        weights[rows] = np.where(visible[:, None], shown / np.maximum(coverage, 1e-12)[:, None], 0)
        area = cos[rows] / (cos_off_axis[rows] * size**2)
        weight[rows] = np.where(visible, coverage * area, 0.0)
    return Observation(pixels=pixels, weights=weights, weight=weight)


def depth_tolerance(camera: ViewCamera, depth: np.ndarray) -> np.ndarray:
    """How far the Depth pass may be from a surface at planar ``depth`` and still show it:
    a relative part (float precision, curved surfaces between vertices) and half a pixel."""
    return _RELATIVE_TOLERANCE * depth + _PIXEL_TOLERANCE * camera.pixel_size(depth)


def _corners(
    x: np.ndarray, y: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """The four pixels whose centres surround each position, and their bilinear weights
    (0 for a pixel outside the picture, whose index is clamped to the border)."""
    gx, gy = x - 0.5, y - 0.5
    x0, y0 = np.floor(gx), np.floor(gy)
    fx, fy = gx - x0, gy - y0
    columns = np.stack([x0, x0 + 1, x0, x0 + 1], axis=1).astype(np.int64)
    rows = np.stack([y0, y0, y0 + 1, y0 + 1], axis=1).astype(np.int64)
    bilinear = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1)
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    columns = np.clip(columns, 0, width - 1)
    rows = np.clip(rows, 0, height - 1)
    return rows * width + columns, np.where(inside, bilinear, 0.0)


def _plane_depths(
    camera: ViewCamera,
    rays: tuple[np.ndarray, np.ndarray],
    pixels: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
) -> np.ndarray:
    """(N, 4) planar depth at which the ray through each of ``pixels`` (``rays``: of
    every pixel, from `ViewCamera.pixel_rays`) meets the plane through ``points`` with
    ``normals``; infinite where the ray runs along the plane."""
    start, direction = rays[0][pixels.ravel()], rays[1][pixels.ravel()]
    point = np.repeat(points, 4, axis=0)
    normal = np.repeat(normals, 4, axis=0)
    facing = np.einsum("nd,nd->n", normal, direction)
    reach = np.einsum("nd,nd->n", normal, point - start)
    along = np.abs(facing) > 1e-12
    t = np.where(along, reach / np.where(along, facing, 1.0), np.inf)
    hit = start + np.where(along, t, 0.0)[:, None] * direction
    return np.where(along, camera.planar_depth(hit), np.inf).reshape(-1, 4)
