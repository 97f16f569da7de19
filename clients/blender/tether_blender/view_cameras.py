"""The cameras Bake Texture generates from: the scene's camera, the selected cameras, or
an orbit of cameras the add-on places around the meshes (see `uvbake.orbit`)."""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Matrix
from tether.background import UserError

from .passes import render_size
from .uvbake.orbit import bounding_sphere, fit_distance, orbit_matrices
from .uvbake.texels import MeshData

__all__ = ["ORBIT_COLLECTION", "chosen_cameras", "place_orbit", "remove_cameras"]

ORBIT_COLLECTION = "Tether Orbit"


def chosen_cameras(context: bpy.types.Context, views: str) -> list[bpy.types.Object]:
    """The cameras of the "ACTIVE" or "SELECTED" views setting, in the order they paint."""
    scene = context.scene
    if views == "ACTIVE":
        camera = scene.camera
        if camera is None:
            raise UserError(
                "The scene has no active camera: add one, set it in Scene properties, or "
                "choose Selected Cameras or Orbit as the views"
            )
        if camera.type != "CAMERA":
            raise UserError(f"The scene's camera {camera.name!r} is not a camera object")
        return [camera]
    cameras = sorted(
        (obj for obj in context.selected_objects if obj.type == "CAMERA"),
        key=lambda obj: (obj != scene.camera, obj.name),
    )
    if not cameras:
        raise UserError(
            "Views are Selected Cameras but no camera is selected: select the cameras "
            "together with the meshes, or choose Active Camera or Orbit"
        )
    return cameras


def place_orbit(
    context: bpy.types.Context, meshes: list[MeshData], count: int, elevation: float
) -> list[bpy.types.Object]:
    """``count`` new cameras around ``meshes`` in the collection `ORBIT_COLLECTION`
    (whose earlier cameras are removed), at ``elevation`` (radians), the first at the
    scene camera's azimuth. Lens and sensor are the scene camera's when it is a
    perspective one."""
    scene = context.scene
    centre, radius = bounding_sphere(np.concatenate([m.positions.reshape(-1, 3) for m in meshes]))
    collection = bpy.data.collections.get(ORBIT_COLLECTION)
    if collection is None:
        collection = bpy.data.collections.new(ORBIT_COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    remove_cameras(list(collection.objects))

    template = scene.camera.data if scene.camera and scene.camera.type == "CAMERA" else None
    cameras = []
    for k in range(count):
        data = bpy.data.cameras.new(f"{ORBIT_COLLECTION} {k + 1}")
        if template is not None and template.type == "PERSP":
            data.lens = template.lens
            data.sensor_fit = template.sensor_fit
            data.sensor_width, data.sensor_height = template.sensor_width, template.sensor_height
        camera = bpy.data.objects.new(data.name, data)
        collection.objects.link(camera)
        cameras.append(camera)
    context.view_layer.update()

    depsgraph = context.evaluated_depsgraph_get()
    width, height = render_size(scene)
    projection = (
        cameras[0]
        .evaluated_get(depsgraph)
        .calc_matrix_camera(
            depsgraph,
            x=width,
            y=height,
            scale_x=scene.render.pixel_aspect_x,
            scale_y=scene.render.pixel_aspect_y,
        )
    )
    distance = fit_distance(radius, np.array(projection))
    azimuth = -math.pi / 2  # in front (-Y), Blender's Front view
    if scene.camera is not None:
        offset = np.array(scene.camera.matrix_world.translation) - centre
        if np.hypot(offset[0], offset[1]) > 1e-6:
            azimuth = math.atan2(offset[1], offset[0])
    for camera, matrix in zip(
        cameras, orbit_matrices(centre, distance, count, elevation, azimuth), strict=True
    ):
        camera.matrix_world = Matrix(matrix.tolist())
        camera.data.clip_start = min(camera.data.clip_start, max(distance - radius, 1e-3) / 2)
        camera.data.clip_end = max(camera.data.clip_end, 2 * (distance + radius))
    context.view_layer.update()
    return cameras


def remove_cameras(cameras: list[bpy.types.Object]) -> None:
    """Delete camera objects and their camera data (when nothing else uses it)."""
    for camera in cameras:
        data = camera.data
        bpy.data.objects.remove(camera)
        if data is not None and data.users == 0:
            bpy.data.cameras.remove(data)
