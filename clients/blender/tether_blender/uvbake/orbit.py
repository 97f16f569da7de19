"""Cameras placed evenly around the targets: the views of the "Orbit" mode.

The cameras stand on a circle around the targets' bounding sphere, at a common elevation
above its centre, each looking at the centre with the world's +Z up, far enough away that
the whole sphere fits the narrower side of the picture. The first stands where the
scene's camera is (its azimuth), so that the first view, which paints most, is the one
the user set up.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bounding_sphere", "fit_distance", "orbit_matrices"]

# Room around the sphere in the picture: 5 % of the half field of view.
_FRAME_MARGIN = 1.05


def bounding_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, radius) of a sphere around ``points`` (N, 3): the centre of their box."""
    centre = (points.min(axis=0) + points.max(axis=0)) * 0.5
    return centre, float(np.linalg.norm(points - centre, axis=1).max())


def fit_distance(radius: float, projection: np.ndarray) -> float:
    """How far from a sphere of ``radius`` a camera with this ``projection`` matrix (4, 4)
    stands to show all of it: the sphere fills the narrower half field of view."""
    half_angle = math.atan(1.0 / max(projection[0][0], projection[1][1]))
    return _FRAME_MARGIN * radius / math.sin(half_angle)


def orbit_matrices(
    centre: np.ndarray, distance: float, count: int, elevation: float, first_azimuth: float
) -> list[np.ndarray]:
    """World matrices (4, 4) of ``count`` cameras ``distance`` from ``centre``, at
    ``elevation`` (radians above the horizontal), azimuths evenly spaced from
    ``first_azimuth`` (radians, counter-clockwise from +X), each looking at ``centre``
    with +Z up. |elevation| must be below 90 degrees."""
    matrices = []
    for k in range(count):
        azimuth = first_azimuth + 2.0 * math.pi * k / count
        back = np.array(
            [
                math.cos(elevation) * math.cos(azimuth),
                math.cos(elevation) * math.sin(azimuth),
                math.sin(elevation),
            ]
        )
        right = np.cross(-back, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, -back)
        matrix = np.eye(4)
        # A camera looks along its -Z, with +Y up and +X right.
        matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = right, up, back
        matrix[:3, 3] = np.asarray(centre, dtype=np.float64) + distance * back
        matrices.append(matrix)
    return matrices
