"""A scene rendered in numpy, as a game engine or 3D tool would have it: a sphere resting
on a floor, seen by a pinhole camera. Returns what a renderer's buffers hold: linear view
depth and view-space normals (+X right, +Y up, +Z toward the viewer), inf/zero where no
geometry was hit."""

from __future__ import annotations

import numpy as np


def render(width: int = 256, height: int = 256, fov_degrees: float = 50.0):
    """-> (depth (H, W) float32 view distance along -Z, normals (H, W, 3) float32)."""
    # 1. One ray per pixel centre through a camera at the origin looking down -Z.
    focal = 0.5 * width / np.tan(np.radians(fov_degrees) / 2)
    xs = (np.arange(width) + 0.5 - width / 2) / focal
    ys = (height / 2 - np.arange(height) - 0.5) / focal  # row 0 is the top
    x, y = np.meshgrid(xs, ys)
    rays = np.stack([x, y, -np.ones_like(x)], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)

    # 2. Sphere (centre c, radius r): smallest positive t with |t*ray - c| = r.
    centre, radius = np.array([0.0, -0.2, -4.0]), 1.0
    b = rays @ centre
    disc = b**2 - (centre @ centre - radius**2)
    t_sphere = np.where(disc > 0, b - np.sqrt(np.maximum(disc, 0)), np.inf)

    # 3. Floor plane y = -1.2, seen from above.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(rays[..., 1] < 0, -1.2 / rays[..., 1], np.inf)
    t_floor = np.where(t_floor * -rays[..., 2] < 20, t_floor, np.inf)  # a floor 20 units deep

    # 4. Nearest hit: depth along -Z and the surface normal there.
    hit_sphere = t_sphere < t_floor
    t = np.minimum(t_sphere, t_floor)
    points = rays * np.where(np.isfinite(t), t, 0.0)[..., None]
    depth = np.where(np.isfinite(t), -points[..., 2], np.inf).astype(np.float32)
    sphere_normals = (points - centre) / radius
    floor_normals = np.broadcast_to([0.0, 1.0, 0.0], points.shape)
    normals = np.where(hit_sphere[..., None], sphere_normals, floor_normals)
    normals = np.where(np.isfinite(t)[..., None], normals, 0.0).astype(np.float32)
    return depth, normals


def silhouette_edges(depth: np.ndarray) -> np.ndarray:
    """White-on-black outline where depth jumps: a line map a canny unit understands."""
    d = np.where(np.isfinite(depth), depth, 100.0)
    jumps = np.zeros(d.shape, dtype=bool)
    jumps[:, 1:] |= np.abs(np.diff(d, axis=1)) > 0.3
    jumps[1:, :] |= np.abs(np.diff(d, axis=0)) > 0.3
    return (jumps * 255).astype(np.uint8)
