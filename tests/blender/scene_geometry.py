"""The scene the add-on checks render (tests/blender/addon_checks.py), what Blender should
see in it found independently by ray casting, and the state of a file that a failed
Generate must leave as it was. Runs in Blender (the ``bpy`` module)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import bpy
import numpy as np
from mathutils import Quaternion, Vector

WIDTH, HEIGHT = 64, 48
SPHERE_CENTRE = Vector((0.0, 0.0, 0.0))
SPHERE_RADIUS = 1.0


def build_scene() -> None:
    """A smooth sphere at the origin, a tilted cube behind it, and a camera looking at the
    sphere's centre from above and to the side with a 25 degree roll, so that world and
    view axes differ in every direction. A sun from just above the camera, casting no
    shadows, lights every visible surface (the colour render for canny): the silhouettes
    stand out against the black background (no world), surfaces shade smoothly, and the
    cube's faces differ in brightness."""
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_uv_sphere_add(radius=SPHERE_RADIUS, location=SPHERE_CENTRE)
    bpy.ops.object.shade_smooth()
    bpy.ops.mesh.primitive_cube_add(size=1.2, location=(1.5, 1.5, -0.9), rotation=(0.3, 0.2, 0.5))
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = Vector((3.0, -4.0, 2.5))
    direction = SPHERE_CENTRE - camera.location
    camera.rotation_mode = "QUATERNION"
    camera.rotation_quaternion = Quaternion(
        direction.normalized(), math.radians(25)
    ) @ direction.to_track_quat("-Z", "Y")
    scene.camera = camera
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.data.use_shadow = False
    # A sun shines along its -Z axis: +Z points at where the light comes from.
    sun.rotation_euler = (
        (camera.location + Vector((-1.0, 0.0, 2.0))).to_track_quat("Z", "Y").to_euler()
    )
    scene.collection.objects.link(sun)
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = WIDTH, HEIGHT, 100
    bpy.context.view_layer.update()


def select_only(*names: str) -> None:
    for obj in bpy.context.scene.objects:
        obj.select_set(obj.name in names)


def snapshot() -> dict[str, Any]:
    """What a failed Generate must leave exactly as it was."""
    scene = bpy.context.scene
    render = scene.render
    state: dict[str, Any] = {
        name: sorted(getattr(bpy.data, name).keys())
        for name in (
            "objects",
            "meshes",
            "materials",
            "images",
            "scenes",
            "cameras",
            "node_groups",
            "worlds",
            "collections",
        )
    }
    state["render"] = [
        render.engine,
        render.resolution_x,
        render.resolution_y,
        render.resolution_percentage,
        render.filepath,
        render.image_settings.file_format,
        render.image_settings.color_depth,
        render.film_transparent,
        render.use_compositing,
        render.use_border,
        scene.cycles.samples,
        scene.cycles.filter_width,
        scene.cycles.device,
    ]
    state["view_layers"] = [
        [layer.name, layer.use, layer.use_pass_z, layer.use_pass_normal]
        for layer in scene.view_layers
    ]
    state["objects_state"] = [
        [
            obj.name,
            [slot.material.name if slot.material else None for slot in obj.material_slots],
            [uv.name for uv in obj.data.uv_layers] if obj.type == "MESH" else [],
            obj.select_get(),
            [round(v, 6) for v in obj.matrix_world.translation],
        ]
        for obj in scene.objects
    ]
    state["camera"] = scene.camera.name if scene.camera else None
    return state


def ray_cast_pixels(
    scene: bpy.types.Scene, camera: bpy.types.Object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel centre, top row first: what was hit (0 sphere, 1 cube, -1 nothing), the
    planar depth along the view axis (NaN = nothing), and the world-space normal the
    Normal pass should hold: analytic for the smooth sphere, the face normal for the cube."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    origin = camera.matrix_world.translation
    forward = (camera.matrix_world.to_3x3() @ Vector((0.0, 0.0, -1.0))).normalized()
    ids = np.full((HEIGHT, WIDTH), -1, dtype=np.int32)
    depth = np.full((HEIGHT, WIDTH), np.nan, dtype=np.float64)
    normal = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float64)
    for row, col, direction in pixel_rays(scene, camera, WIDTH, HEIGHT):
        hit, location, face_normal, _, obj, _ = scene.ray_cast(depsgraph, origin, direction)
        if not hit:
            continue
        ids[row, col] = 0 if obj.name == "Sphere" else 1
        depth[row, col] = (location - origin).dot(forward)
        if obj.name == "Sphere":
            normal[row, col] = (location - SPHERE_CENTRE).normalized()
        else:
            normal[row, col] = face_normal
    return ids, depth, normal


def pixel_rays(
    scene: bpy.types.Scene, camera: bpy.types.Object, width: int, height: int
) -> Iterator[tuple[int, int, Vector]]:
    """(row, column, world-space direction) of the ray from the camera through each pixel
    centre of a width x height render, top row first."""
    top_right, _bottom_right, bottom_left, top_left = camera.data.view_frame(scene=scene)
    rotation = camera.matrix_world.to_3x3()
    for row in range(height):
        for column in range(width):
            point = (
                top_left
                + (top_right - top_left) * ((column + 0.5) / width)
                + (bottom_left - top_left) * ((row + 0.5) / height)
            )
            yield row, column, (rotation @ point).normalized()


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """How two `snapshot`s compare: whether they are equal, and the keys that differ."""
    return {
        "unchanged": before == after,
        "changed": [key for key in before if before[key] != after.get(key)],
    }


def silhouette(ids: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood sees more than one object (or object and nothing):
    there, a sample a fraction of a pixel off the centre may hit something else."""
    padded = np.pad(ids, 1, mode="edge")
    edge = np.zeros(ids.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[1 + dy : 1 + dy + ids.shape[0], 1 + dx : 1 + dx + ids.shape[1]]
            edge |= shifted != ids
    return edge


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by ``radius`` pixels in every direction (a square neighbourhood)."""
    padded = np.pad(mask, radius)
    height, width = mask.shape
    grown = np.zeros(mask.shape, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def image_pixels(image: bpy.types.Image) -> np.ndarray:
    values = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(values)
    return values.reshape(image.size[1], image.size[0], -1)
