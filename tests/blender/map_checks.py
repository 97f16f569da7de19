"""The sections of tests/blender/addon_checks.py about what the add-on sends and makes:
the passes as the EXR reader reads them, the depth, normal and canny maps against
geometry found by ray casting, and the projected texture. Runs in Blender."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import numpy as np
import tether
import tether.maps
from bpy_extras.object_utils import world_to_camera_view
from scene_geometry import HEIGHT, WIDTH, grow, ray_cast_pixels, silhouette


def check_exr_layouts(folder: Path) -> dict[str, Any]:
    """Blender 5 writes one part per pass; Blender 4 (and 5 with "Interleave") one part
    with every channel. The reader must give the same planes for both."""
    from tether_blender import exr, passes

    scene = bpy.context.scene
    planes = {}
    for interleave in (False, True):
        path = folder / f"interleave-{interleave}.exr"
        copy = scene.copy()
        try:
            passes.configure_for_passes(copy, bpy.context.view_layer.name, path)
            copy.render.image_settings.use_exr_interleave = interleave
            bpy.ops.render.render(write_still=True, scene=copy.name)
        finally:
            bpy.data.scenes.remove(copy)
        planes[interleave] = exr.read_channels(path)
    multi, single = planes[False], planes[True]
    return {
        "channels": sorted(multi),
        "same_channels": sorted(multi) == sorted(single),
        "max_diff": max(float(np.abs(multi[k] - single[k]).max()) for k in multi),
        "shape": list(multi["ViewLayer.Depth.Z"].shape),
    }


def check_maps(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The maps sent against (1) tether.maps on Blender's own passes, rendered again, and
    (2) depth and normals found independently by ray casting through each pixel centre."""
    from tether_blender import passes as addon_passes

    _, options = calls[-1]
    sent = {c.model: np.asarray(c.image) for c in options["controls"]}
    scene = bpy.context.scene
    camera = scene.camera
    camera_to_world = np.array(camera.matrix_world)

    own = addon_passes.render_passes(scene, bpy.context.view_layer.name)  # data passes only
    exact = {
        "depth": tether.maps.depth_from_linear(own.depth, far=addon_passes.BACKGROUND_DEPTH),
        "normal": tether.maps.normals_from_world(own.normal, camera_to_world),
    }

    hit_ids, depth, normal = ray_cast_pixels(scene, camera)
    expected_depth = tether.maps.depth_from_linear(depth)  # NaN = no hit = background
    expected_normal = tether.maps.normals_from_world(normal, camera_to_world)
    interior = ~silhouette(hit_ids)
    sphere, cube, empty = (hit_ids == 0) & interior, (hit_ids == 1) & interior, hit_ids < 0
    d_err = np.abs(sent["depth"] - expected_depth).max(axis=-1)
    n_err = np.abs(sent["normal"] - expected_normal).max(axis=-1)

    rows, cols = HEIGHT // 2, WIDTH // 2
    centre = sent["normal"][rows - 1 : rows + 1, cols - 1 : cols + 1].reshape(-1, 3).mean(axis=0)
    nearest = np.unravel_index(np.nanargmin(depth), depth.shape)
    farthest = np.unravel_index(np.nanargmax(depth), depth.shape)
    return {
        "models": sorted(sent),
        "own_render_has_colour": own.colour is not None,
        "exact_depth_max_diff": float(np.abs(sent["depth"] - exact["depth"]).max()),
        "exact_normal_max_diff": float(np.abs(sent["normal"] - exact["normal"]).max()),
        "pixels": {
            "sphere": int(sphere.sum()),
            "cube": int(cube.sum()),
            "empty": int(empty.sum()),
            "silhouette": int((~interior).sum()),
        },
        "raycast_depth_max_diff": float(d_err[interior].max()),
        "raycast_normal_sphere_max_diff": float(n_err[sphere].max()),
        "raycast_normal_cube_max_diff": float(n_err[cube].max()),
        "background_depth_max": float(sent["depth"][empty & interior].max()),
        "background_normal_max_diff": float(
            np.abs(sent["normal"][empty & interior] - [0.5, 0.5, 1.0]).max()
        ),
        "sphere_centre_normal": centre.tolist(),
        # Conventions read straight from docs/conventions.md, not through tether.maps: a sphere
        # pixel right of the centre faces right (red = left, so R < 0.5), one above it
        # faces up (G > 0.5); the nearest surface is white and the farthest black.
        "sphere_right_of_centre": sent["normal"][rows, cols + 8].tolist(),
        "sphere_above_centre": sent["normal"][rows - 8, cols].tolist(),
        "depth_at_nearest": float(sent["depth"][nearest][0]),
        "depth_at_farthest": float(sent["depth"][farthest][0]),
    }


def check_canny(calls: list[tuple[str, dict[str, Any]]], own: Any, server: str) -> dict[str, Any]:
    """The canny unit sent with Generate: its picture against the add-on's colour render of
    the scene made just before, and the map the server makes of it (Preprocess runs the
    code Generate runs) against the geometry found by ray casting: edges along every
    silhouette, none in flat areas."""
    _, options = calls[-1]
    (unit,) = [c for c in options["controls"] if c.model == "canny"]
    scene = bpy.context.scene
    with tether.Client(server) as client:
        edges = client.preprocess(unit, width=WIDTH, height=HEIGHT, timeout=30)
    edge = edges[..., 0] > 127

    hit_ids, _depth, normal = ray_cast_pixels(scene, scene.camera)
    # Geometric edges: silhouettes (what was hit changes) and the cube's creases (its face
    # normal changes). The sphere is smooth and lit without shadows: no edges inside it.
    face = np.where(
        hit_ids == 1, 10 + np.round(normal, 3) @ np.array([1.0, 100.0, 10000.0]), hit_ids
    )
    creases_and_silhouettes = silhouette(face)
    flat = ~grow(creases_and_silhouettes, 1)  # two pixels or more from any geometric edge
    near_edge = grow(edge, 1)
    outlines = silhouette(hit_ids)
    coverage = {}
    for name, index in (("sphere", 0), ("cube", 1)):
        # The band of pixels on both sides of where this object meets the background.
        band = outlines & grow(hit_ids == index, 1) & grow(hit_ids == -1, 1)
        coverage[name] = float(near_edge[band].mean())
    picture = np.asarray(unit.image)
    return {
        "picture_dtype": str(picture.dtype),
        "picture_shape": list(picture.shape),
        "picture_vs_own_render_max_diff": int(
            np.abs(picture.astype(np.int16) - own.colour.astype(np.int16)).max()
        ),
        "own_render_has_data_passes": own.depth is not None or own.normal is not None,
        "map_shape": list(edges.shape),
        "map_values": sorted({int(v) for v in np.unique(edges)}),
        "map_channels_equal": bool((edges == edges[..., :1]).all()),
        "edge_pixels": int(edge.sum()),
        "flat_pixels": int(flat.sum()),
        "edges_in_flat_areas": int((edge & flat).sum()),
        "silhouette_coverage": coverage,
    }


def check_projection(image_name: str) -> dict[str, Any]:
    from tether_blender.projection import UV_MAP

    scene = bpy.context.scene
    cube = bpy.data.objects["Cube"]
    sphere = bpy.data.objects["Sphere"]
    material = cube.active_material
    nodes = material.node_tree.nodes if material else []
    textures = [n for n in nodes if n.bl_idname == "ShaderNodeTexImage"]
    uv_nodes = [n for n in nodes if n.bl_idname == "ShaderNodeUVMap"]
    mesh = cube.data
    layer = mesh.uv_layers.get(UV_MAP)
    uv_max_diff = None
    if layer is not None:
        # Independent reference: Blender's own world_to_camera_view for each loop's vertex.
        uv_max_diff = 0.0
        for loop in mesh.loops:
            world = cube.matrix_world @ mesh.vertices[loop.vertex_index].co
            expected = world_to_camera_view(scene, scene.camera, world)
            got = layer.data[loop.index].uv
            uv_max_diff = max(uv_max_diff, abs(got.x - expected.x), abs(got.y - expected.y))
    linked = bool(
        textures
        and uv_nodes
        and any(
            link.from_node == uv_nodes[0] and link.to_node == textures[0]
            for link in material.node_tree.links
        )
    )
    return {
        "cube_material": material.name if material else None,
        "cube_slots": [
            slot.material.name if slot.material else None for slot in cube.material_slots
        ],
        "texture_images": [t.image.name if t.image else None for t in textures],
        "expected_image": image_name,
        "uv_node_map": [n.uv_map for n in uv_nodes],
        "uv_feeds_texture": linked,
        "uv_layer": layer is not None,
        "uv_max_diff": uv_max_diff,
        "sphere_materials": [
            slot.material.name if slot.material else None for slot in sphere.material_slots
        ],
        "sphere_uv_layers": [uv.name for uv in sphere.data.uv_layers],
    }
