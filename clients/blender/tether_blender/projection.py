"""Stick a generated picture to the geometry it was generated from.

The camera's view-projection at render time is frozen into a UV map: every vertex gets the
UV of the point where it appeared in the picture, and a material reads the image through
that UV map. Moving the camera afterwards no longer changes the texture (it belongs to the
mesh now), unlike a live projection from the camera object.

Known limits of per-vertex projection (the same as Blender's "Project from View"): UVs
are interpolated linearly across each face, so a large face seen in strong perspective
shows some skew (subdivide it for accuracy); faces hidden from the camera get the colours
of whatever covered them; a mesh shared by several objects shares the UV map and the
material slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from .materials import assign_everywhere, textured_material
from .passes import render_size

__all__ = ["UV_MAP", "CameraSnapshot", "apply_projection", "snapshot_camera", "projected_uvs"]

UV_MAP = "Tether Projection"
# Vertices at or behind the camera plane have no image position; clamping w keeps their
# UVs finite (far outside 0..1, where the CLIP extension shows nothing).
_MIN_W = 1e-6


@dataclass(frozen=True)
class CameraSnapshot:
    """The active camera at the time of the render, as plain matrices."""

    camera_to_world: np.ndarray  # (4, 4) the camera's world matrix
    world_to_clip: np.ndarray  # (4, 4) projection @ view, for the render's size and aspect


def snapshot_camera(
    camera: bpy.types.Object, depsgraph: bpy.types.Depsgraph, scene: bpy.types.Scene
) -> CameraSnapshot:
    """Capture the evaluated camera (animation and constraints applied) for the scene's
    render size and pixel aspect."""
    evaluated = camera.evaluated_get(depsgraph)
    render = scene.render
    width, height = render_size(scene)
    projection = evaluated.calc_matrix_camera(
        depsgraph,
        x=width,
        y=height,
        scale_x=render.pixel_aspect_x,
        scale_y=render.pixel_aspect_y,
    )
    world = evaluated.matrix_world
    return CameraSnapshot(
        camera_to_world=np.array(world, dtype=np.float64),
        world_to_clip=np.array(projection @ world.inverted(), dtype=np.float64),
    )


def projected_uvs(obj: bpy.types.Object, snapshot: CameraSnapshot) -> np.ndarray:
    """(vertices, 2) UVs of the mesh's vertices: their position in the camera's picture,
    (0, 0) at its bottom-left corner and (1, 1) at its top-right."""
    mesh = obj.data
    count = len(mesh.vertices)
    local = np.empty(count * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", local)
    homogeneous = np.ones((count, 4), dtype=np.float64)
    homogeneous[:, :3] = local.reshape(count, 3)
    to_clip = snapshot.world_to_clip @ np.array(obj.matrix_world, dtype=np.float64)
    clip = homogeneous @ to_clip.T
    w = np.maximum(clip[:, 3], _MIN_W)
    return (clip[:, :2] / w[:, None] + 1.0) * 0.5


def apply_projection(
    objects: list[bpy.types.Object], image: bpy.types.Image, snapshot: CameraSnapshot
) -> tuple[bpy.types.Material, list[str]]:
    """Give each mesh object a camera-projected UV map and a material showing ``image``
    through it, in every material slot. Returns the material and the names of objects
    skipped (not meshes, or no room for another UV map)."""
    material = projected_material(image)
    skipped: list[str] = []
    for obj in objects:
        if obj.type != "MESH":
            skipped.append(obj.name)
            continue
        mesh = obj.data
        layer = mesh.uv_layers.get(UV_MAP)
        if layer is None:
            try:
                layer = mesh.uv_layers.new(name=UV_MAP)
            except RuntimeError:
                layer = None
        if layer is None:  # meshes hold at most 8 UV maps
            skipped.append(obj.name)
            continue
        loop_vertices = np.empty(len(mesh.loops), dtype=np.int32)
        mesh.loops.foreach_get("vertex_index", loop_vertices)
        uvs = projected_uvs(obj, snapshot)[loop_vertices].astype(np.float32)
        layer.data.foreach_set("uv", uvs.ravel())
        mesh.update()
        assign_everywhere(obj, material)
    return material, skipped


def projected_material(image: bpy.types.Image) -> bpy.types.Material:
    """Principled BSDF whose base colour is ``image`` read through the projection UVs;
    outside the picture nothing, not a repeat of it."""
    return textured_material(f"{image.name} Projection", image, UV_MAP, "CLIP")
