"""Check everything for Bake Texture, then place the orbit (if asked), render every view
and gather the meshes, before anything is sent.

The order is Generate's (plan.py): faults the user can fix are found first and leave the
scene as it was; the lasting work comes last. The orbit cameras are the one change to the
scene, made after the server has answered and removed again if a render fails.
"""

from __future__ import annotations

import bpy
from tether.background import UserError

from .bake_views import BakeInputs, BakeTarget, BakeView
from .mesh_data import active_uv_map, mesh_data
from .plan import Request, check_request, render_view
from .projection import snapshot_camera
from .settings import TetherSettings
from .uvbake.camera import ViewCamera
from .view_cameras import chosen_cameras, place_orbit, remove_cameras

__all__ = ["prepare_bake"]


def prepare_bake(context: bpy.types.Context) -> BakeInputs:
    """Check the selection, views, settings and server; render the views; gather the
    selected meshes' triangles and UVs."""
    settings: TetherSettings = context.scene.tether
    objects = [obj for obj in context.selected_objects if obj.type == "MESH"]
    if not objects:
        raise UserError("Bake Texture: no mesh is selected; select the meshes to texture")
    uv_maps = {}
    for obj in objects:
        uv_map = active_uv_map(obj)
        if uv_map is None:
            raise UserError(
                f"{obj.name!r} has no UV map to bake on: unwrap it first (Edit Mode > UV > "
                "Smart UV Project, for instance)"
            )
        uv_maps[obj.name] = uv_map
    cameras = [] if settings.views == "ORBIT" else chosen_cameras(context, settings.views)
    request = check_request(context)

    depsgraph = context.evaluated_depsgraph_get()
    targets = tuple(
        BakeTarget(obj.name, uv_maps[obj.name], mesh_data(obj, depsgraph, uv_maps[obj.name]))
        for obj in objects
    )
    empty = [target.name for target in targets if not len(target.mesh.positions)]
    if empty:
        raise UserError(
            f"{', '.join(empty)}: no faces with UVs to bake on (a modifier may drop the UV map)"
        )

    placed = []
    if settings.views == "ORBIT":
        meshes = [target.mesh for target in targets]
        placed = place_orbit(context, meshes, settings.orbit_count, settings.orbit_elevation)
        cameras = placed
    try:
        views = tuple(bake_view(context, request, camera) for camera in cameras)
    except UserError:
        remove_cameras(placed)
        raise
    return BakeInputs(
        config=request.config,
        prompt=request.prompt,
        options=request.options,
        views=views,
        targets=targets,
        texture_size=settings.texture_size,
        margin=settings.texture_margin,
        max_angle=settings.max_angle,
    )


def bake_view(context: bpy.types.Context, request: Request, camera: bpy.types.Object) -> BakeView:
    """Render one view: the Depth pass (always: it decides what the view sees) and what
    the units need."""
    controls, passes = render_view(context, request, camera, data=True)
    snapshot = snapshot_camera(camera, context.evaluated_depsgraph_get(), context.scene)
    return BakeView(
        name=camera.name,
        camera=ViewCamera(
            camera_to_world=snapshot.camera_to_world,
            world_to_clip=snapshot.world_to_clip,
            width=request.width,
            height=request.height,
        ),
        controls=tuple(controls),
        depth=passes.depth,
    )
