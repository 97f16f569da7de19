"""A view's camera as two matrices, and what follows from them: where a point lands in
the picture, its planar depth, the ray through a pixel and the size of a pixel.

Pixel positions are those of `raster`: x right and y down from the picture's top-left
corner, pixel (c, r) centred at (c + 0.5, r + 0.5). Planar depth is the distance along
the camera's view axis, as in Blender's Depth pass. Perspective and orthographic cameras
are both handled: an orthographic one is recognised by its clip w not depending on
position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ViewCamera"]


@dataclass(frozen=True)
class ViewCamera:
    """A camera at the time of its render, for a picture of ``width`` x ``height``."""

    camera_to_world: np.ndarray  # (4, 4) the camera object's world matrix
    world_to_clip: np.ndarray  # (4, 4) projection @ view, for this picture's size
    width: int
    height: int

    @property
    def origin(self) -> np.ndarray:
        """(3,) the camera's position."""
        return np.asarray(self.camera_to_world, dtype=np.float64)[:3, 3]

    @property
    def forward(self) -> np.ndarray:
        """(3,) unit vector along the view axis (the camera's -Z)."""
        axis = -np.asarray(self.camera_to_world, dtype=np.float64)[:3, 2]
        return axis / np.linalg.norm(axis)

    @property
    def orthographic(self) -> bool:
        return bool(np.abs(np.asarray(self.world_to_clip)[3, :3]).max() < 1e-12)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, w) of world ``points`` (N, 3): pixel position and clip w (the planar
        depth for a perspective camera, 1 for an orthographic one)."""
        matrix = np.asarray(self.world_to_clip, dtype=np.float64)
        clip = points @ matrix[:3, :3].T + matrix[:3, 3]
        w = points @ matrix[3, :3] + matrix[3, 3]
        safe = np.where(np.abs(w) > 1e-12, w, 1e-12)
        x = (clip[:, 0] / safe + 1.0) * 0.5 * self.width
        y = (1.0 - clip[:, 1] / safe) * 0.5 * self.height
        return x, y, w

    def planar_depth(self, points: np.ndarray) -> np.ndarray:
        """(N,) distance of world ``points`` along the view axis."""
        return (points - self.origin) @ self.forward

    def pixel_size(self, depth: np.ndarray) -> np.ndarray:
        """The width, in world units, of one pixel at planar ``depth``."""
        projection = np.asarray(self.world_to_clip, dtype=np.float64) @ np.asarray(
            self.camera_to_world, dtype=np.float64
        )
        scale = 2.0 / (self.width * projection[0, 0])
        if self.orthographic:
            return np.full(np.shape(depth), scale)
        return scale * np.asarray(depth, dtype=np.float64)

    def toward_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) unit vectors from ``points`` toward the camera: toward its position for a
        perspective camera, against the view axis for an orthographic one."""
        if self.orthographic:
            return np.broadcast_to(-self.forward, points.shape)
        direction = self.origin - points
        return direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)

    def rays(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, direction) of the world-space rays through pixel positions (x, y), each
        (N, 3): from the near clip plane toward the far one."""
        ndc_x = (x / self.width * 2.0 - 1.0)[:, None]
        ndc_y = (1.0 - y / self.height * 2.0)[:, None]
        inverse = np.linalg.inv(np.asarray(self.world_to_clip, dtype=np.float64))
        ends = []
        for ndc_z in (-1.0, 1.0):
            # inverse @ (x, y, z, 1) column by column: no (N, 4) @ (4, 4) product, which
            # some BLAS builds run slowly.
            world = ndc_x * inverse[:, 0] + ndc_y * inverse[:, 1] + ndc_z * inverse[:, 2]
            world += inverse[:, 3]
            ends.append(world[:, :3] / world[:, 3:4])
        return ends[0], ends[1] - ends[0]

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, direction) of the ray through every pixel centre, (H * W, 3) each, row
        by row from the top."""
        columns, rows = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        return self.rays(columns.ravel(), rows.ravel())
