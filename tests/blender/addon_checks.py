"""Run the Blender add-on in Blender (the ``bpy`` module) and measure what it does.

Run by tests/test_blender.py with the .venv-blender Python, sdk/ and clients/blender on
PYTHONPATH:

    python tests/blender/addon_checks.py --server HOST:PORT \
        --token-server HOST:PORT --token SECRET --out results.json

This script measures; the pytest side holds the expectations. Every section writes its
measurements, or the traceback that stopped it (as "crashed"), into one JSON object, so
that one broken section does not hide the others.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import struct
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
import numpy as np
import tether
import tether.maps
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Quaternion, Vector

ADDON = "tether_blender"
WIDTH, HEIGHT = 64, 48
SPHERE_CENTRE = Vector((0.0, 0.0, 0.0))
SPHERE_RADIUS = 1.0
# The add-on's colour render of the scene just before the first Generate (check_generate).
COLOUR_BEFORE_GENERATE: list[Any] = []


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--token-server", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    results: dict[str, Any] = {"blender": bpy.app.version_string}
    recorder = StreamRecorder()
    recorder.install()
    bpy.ops.wm.read_factory_settings(use_empty=True)

    section(results, "registration", check_registration)
    section(results, "connection_rules", check_connection_rules)
    enable()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.address = args.server
    build_scene()
    with tempfile.TemporaryDirectory(prefix="tether-blender-test-") as temp:
        section(results, "generate", lambda: check_generate(recorder))
        section(results, "panel", check_panel)
        section(results, "exr_layouts", lambda: check_exr_layouts(Path(temp)))
        section(results, "maps", lambda: check_maps(recorder))
        section(results, "canny", lambda: check_canny(recorder, args.server))
        section(results, "projection", check_projection)
        section(results, "saved", lambda: check_saved(recorder, Path(temp)))
        section(results, "cancel", check_cancel)
        section(results, "faults", lambda: check_faults(args, prefs))
    section(results, "unregister", check_unregister)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


# -- helpers --------------------------------------------------------------------------------


def section(results: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    try:
        results[name] = run()
    except Exception:
        results[name] = {"crashed": traceback.format_exc()}


def enable() -> None:
    """Enable the add-on the way Preferences > Add-ons does."""
    bpy.ops.preferences.addon_enable(module=ADDON)


def disable() -> None:
    bpy.ops.preferences.addon_disable(module=ADDON)


class StreamRecorder:
    """Wraps tether.Client.stream, the one call the add-on sends requests with, to keep a
    copy of every request's arguments; the call itself goes through unchanged."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def install(self) -> None:
        original = tether.Client.stream

        def stream(client: tether.Client, prompt: str, **options: Any) -> tether.Stream:
            self.calls.append((prompt, options))
            return original(client, prompt, **options)

        tether.Client.stream = stream


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


class RecordingLayout:
    """Stands in for bpy.types.UILayout, since background mode draws no panels: checks that
    every property, operator and icon the draw code names exists, and keeps the labels."""

    ICONS = {
        item.identifier
        for item in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items
    }

    def __init__(self, log: dict[str, list[str]]) -> None:
        self.log = log

    def row(self, **_options: Any) -> RecordingLayout:
        return RecordingLayout(self.log)

    column = box = row

    def prop(self, data: Any, name: str, icon: str = "NONE", **_options: Any) -> None:
        self._icon(icon)
        if name not in data.bl_rna.properties:
            self.log["problems"].append(f"no property {name!r} on {data!r}")
        self.log["props"].append(name)

    def operator(self, idname: str, icon: str = "NONE", **_options: Any) -> None:
        self._icon(icon)
        module, _, name = idname.partition(".")
        if not hasattr(bpy.types, f"{module.upper()}_OT_{name}"):
            self.log["problems"].append(f"no operator {idname}")
        self.log["operators"].append(idname)

    def label(self, text: str = "", icon: str = "NONE") -> None:
        self._icon(icon)
        self.log["labels"].append(text)

    def _icon(self, icon: str) -> None:
        if icon not in self.ICONS:
            self.log["problems"].append(f"no icon {icon!r}")


def draw_panel() -> dict[str, list[str]]:
    from tether_blender import ui

    log: dict[str, list[str]] = {"props": [], "operators": [], "labels": [], "problems": []}
    ui.VIEW3D_PT_tether.draw(types.SimpleNamespace(layout=RecordingLayout(log)), bpy.context)
    return log


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


def generate_expecting_error() -> str | None:
    """Run Generate; the error it reported, or None if it succeeded. Blender turns an
    operator's ERROR report into a RuntimeError when Python called the operator."""
    try:
        bpy.ops.tether.generate(wait=True)
    except RuntimeError as error:
        return str(error)
    return None


def settings() -> Any:
    return bpy.context.scene.tether


def last() -> Any:
    from tether_blender import generation

    return generation.last()


# -- sections --------------------------------------------------------------------------------


def check_registration() -> dict[str, Any]:
    def state() -> dict[str, Any]:
        return {
            "operators": sorted(
                name
                for name in ("generate", "cancel", "refresh_models", "project_result")
                if hasattr(bpy.types, f"TETHER_OT_{name}")
            ),
            "scene_property": hasattr(bpy.types.Scene, "tether"),
            "panel": hasattr(bpy.types, "VIEW3D_PT_tether"),
            "preferences": bpy.context.preferences.addons.get(ADDON) is not None,
        }

    before = state()
    enable()
    enabled = state()
    disable()
    disabled = state()
    enable()
    enabled_again = state()
    disable()
    return {
        "before": before,
        "enabled": enabled,
        "disabled": disabled,
        "enabled_again": enabled_again,
    }


def check_connection_rules() -> dict[str, Any]:
    from tether_blender.connection import ClientConfig, address_problem, is_loopback

    addresses = [
        "127.0.0.1:50051",
        "localhost:1",
        "[::1]:50051",
        "127.8.9.10:5",
        "192.0.2.7:50051",
        "gpu.example:50051",
        "[2001:db8::1]:443",
    ]
    remote = ClientConfig("192.0.2.7:50051", "", False, "")
    return {
        "online_access": bpy.app.online_access,
        "loopback": {address: is_loopback(address) for address in addresses},
        # Pure checks: neither call connects anywhere.
        "remote_offline": address_problem(remote, online_access=False),
        "remote_online": address_problem(remote, online_access=True),
        "empty_address": address_problem(ClientConfig(" ", "", False, ""), online_access=True),
    }


def check_generate(recorder: StreamRecorder) -> dict[str, Any]:
    s = settings()
    s.prompt = "weathered stone, moss"
    s.negative_prompt = "blurry"
    s.steps = 4
    s.use_random_seed = False
    s.seed = 1234
    s.preview = "FAST"
    s.project_onto_selected = True
    s.depth.weight, s.depth.start, s.depth.end = 0.8, 0.1, 0.9
    s.normal.weight = 1.0
    s.canny.enabled = True
    s.canny.weight, s.canny.start, s.canny.end = 0.6, 0.0, 0.5
    s.canny.low, s.canny.high = 80, 160
    select_only("Cube")
    # The colour picture as the scene looks now: the projection below changes the cube.
    from tether_blender import passes

    layer = bpy.context.view_layer.name
    COLOUR_BEFORE_GENERATE.append(
        passes.render_passes(bpy.context.scene, layer, data=False, colour=True)
    )
    before = snapshot()
    recorder.calls.clear()
    started = time.monotonic()
    report = generate_expecting_error()
    seconds = time.monotonic() - started
    after = snapshot()
    done = last()
    image = bpy.data.images.get(done.image_name) if done.image_name else None
    prompt, options = recorder.calls[-1]
    return {
        "error": report,
        "seconds": seconds,
        "outcome": list(done.outcome()),
        "previews": done.previews,
        "seed": done.seed,
        "image_name": done.image_name,
        "image_size": list(image.size) if image else None,
        "image_packed": bool(image and image.packed_file),
        "image_pixels_nonblank": bool(image and _pixels(image)[..., :3].std() > 0),
        "requests": len(recorder.calls),
        "prompt": prompt,
        "options": {k: v for k, v in options.items() if k != "controls"},
        "controls": [
            {
                "model": c.model,
                "weight": c.weight,
                "start": c.start,
                "end": c.end,
                "dtype": str(np.asarray(c.image).dtype),
                "shape": list(np.asarray(c.image).shape),
                "preprocessor": repr(c.preprocessor),
            }
            for c in options["controls"]
        ],
        "render_settings_unchanged": before["render"] == after["render"],
        "view_layers_unchanged": before["view_layers"] == after["view_layers"],
        "scenes_after": after["scenes"],
        "images_added": sorted(set(after["images"]) - set(before["images"])),
    }


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


def check_panel() -> dict[str, Any]:
    from tether_blender.preferences import draw_preferences

    log: dict[str, list[str]] = {"props": [], "operators": [], "labels": [], "problems": []}
    draw_preferences(RecordingLayout(log), bpy.context.preferences.addons[ADDON].preferences)
    return {"after_generate": draw_panel(), "preferences": log}


def check_maps(recorder: StreamRecorder) -> dict[str, Any]:
    """The maps sent against (1) tether.maps on Blender's own passes, rendered again, and
    (2) depth and normals found independently by ray casting through each pixel centre."""
    from tether_blender import passes as addon_passes

    _, options = recorder.calls[-1]
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


def check_canny(recorder: StreamRecorder, server: str) -> dict[str, Any]:
    """The canny unit sent with Generate: its picture against the add-on's colour render of
    the scene made just before, and the map the server makes of it (Preprocess runs the
    code Generate runs) against the geometry found by ray casting: edges along every
    silhouette, none in flat areas."""
    _, options = recorder.calls[-1]
    (unit,) = [c for c in options["controls"] if c.model == "canny"]
    scene = bpy.context.scene
    (own,) = COLOUR_BEFORE_GENERATE
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


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by ``radius`` pixels in every direction (a square neighbourhood)."""
    padded = np.pad(mask, radius)
    height, width = mask.shape
    grown = np.zeros(mask.shape, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def ray_cast_pixels(
    scene: bpy.types.Scene, camera: bpy.types.Object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel centre, top row first: what was hit (0 sphere, 1 cube, -1 nothing), the
    planar depth along the view axis (NaN = nothing), and the world-space normal the
    Normal pass should hold: analytic for the smooth sphere, the face normal for the cube."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    top_right, _bottom_right, bottom_left, top_left = camera.data.view_frame(scene=scene)
    rotation = camera.matrix_world.to_3x3()
    origin = camera.matrix_world.translation
    forward = (rotation @ Vector((0.0, 0.0, -1.0))).normalized()
    ids = np.full((HEIGHT, WIDTH), -1, dtype=np.int32)
    depth = np.full((HEIGHT, WIDTH), np.nan, dtype=np.float64)
    normal = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float64)
    for row in range(HEIGHT):
        for col in range(WIDTH):
            point = (
                top_left
                + (top_right - top_left) * ((col + 0.5) / WIDTH)
                + (bottom_left - top_left) * ((row + 0.5) / HEIGHT)
            )
            direction = (rotation @ point).normalized()
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


def check_projection() -> dict[str, Any]:
    from tether_blender.projection import UV_MAP

    scene = bpy.context.scene
    cube = bpy.data.objects["Cube"]
    sphere = bpy.data.objects["Sphere"]
    image_name = last().image_name
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


def check_saved(recorder: StreamRecorder, folder: Path) -> dict[str, Any]:
    """A saved .blend: the picture goes next to it. Generated with the canny unit alone, so
    that only the colour picture is rendered."""
    blend = folder / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    s = settings()
    s.use_random_seed = True
    s.project_onto_selected = False
    s.depth.enabled = s.normal.enabled = False
    from tether_blender import plan

    original = plan.render_passes
    renders: list[dict[str, Any]] = []

    def render_passes(*args: Any, **options: Any) -> Any:
        renders.append(options)
        return original(*args, **options)

    plan.render_passes = render_passes
    try:
        error = generate_expecting_error()
    finally:
        plan.render_passes = original
        s.depth.enabled = s.normal.enabled = True
    _, options = recorder.calls[-1]
    done = last()
    image = bpy.data.images.get(done.image_name)
    path = Path(bpy.path.abspath(image.filepath)) if image else None
    size = None
    if path and path.is_file():
        header = path.read_bytes()[:24]
        size = list(struct.unpack(">II", header[16:24]))  # PNG IHDR width, height
    return {
        "error": error,
        "seed": done.seed,
        "image_filepath": image.filepath if image else None,
        "file": str(path) if path else None,
        "file_next_to_blend": bool(path and path.parent == folder and path.is_file()),
        "png_size": size,
        "packed": bool(image and image.packed_file),
        "controls": [
            [c.model, str(np.asarray(c.image).dtype), list(np.asarray(c.image).shape)]
            for c in options["controls"]
        ],
        "renders": renders,
    }


def check_cancel() -> dict[str, Any]:
    """The non-waiting path, as the UI runs it: Generate registers a timer and returns at
    once; here the script plays the timer (timers do not run in background mode) and
    presses Cancel after the first progress event."""
    from tether_blender import generation

    s = settings()
    s.steps = 150
    s.project_onto_selected = False
    result = bpy.ops.tether.generate()
    timer_registered = bpy.app.timers.is_registered(generation.tick)
    cancel_result = None
    panel_while_running = None
    deadline = time.monotonic() + 60
    while generation.current() is not None and time.monotonic() < deadline:
        running = generation.current()
        if running.step >= 1 and cancel_result is None:
            panel_while_running = draw_panel()
            cancel_result = sorted(bpy.ops.tether.cancel())
        generation.tick()
        time.sleep(0.02)
    if bpy.app.timers.is_registered(generation.tick):
        bpy.app.timers.unregister(generation.tick)
    done = last()
    s.steps = 4
    return {
        "generate_result": sorted(result),
        "timer_registered": timer_registered,
        "cancel_result": cancel_result,
        "panel_while_running": panel_while_running,
        "cancelled": done.cancelled,
        "error": done.error,
        "step": done.step,
        "total": done.total,
        "outcome": list(done.outcome()),
    }


def check_faults(args: argparse.Namespace, prefs: Any) -> dict[str, Any]:
    scene = bpy.context.scene
    s = settings()
    s.project_onto_selected = True
    select_only("Cube", "Sphere")
    good_address = prefs.address
    cases: dict[str, Any] = {}

    def case(name: str, setup: Callable[[], None], undo: Callable[[], None]) -> None:
        setup()
        before = snapshot()
        error = generate_expecting_error()
        after = snapshot()
        undo()
        cases[name] = {
            "error": error,
            "unchanged": before == after,
            "changed": [key for key in before if before[key] != after.get(key)],
        }

    camera = scene.camera
    case(
        "no_camera",
        lambda: setattr(scene, "camera", None),
        lambda: setattr(scene, "camera", camera),
    )
    closed = _closed_port()
    case(
        "unreachable",
        lambda: setattr(prefs, "address", f"127.0.0.1:{closed}"),
        lambda: setattr(prefs, "address", good_address),
    )

    def bad_token() -> None:
        prefs.address, prefs.token = args.token_server, "not-the-token"

    def reset_server() -> None:
        prefs.address, prefs.token = good_address, ""

    case("bad_token", bad_token, reset_server)
    case(
        "size_not_multiple_of_8",
        lambda: setattr(scene.render, "resolution_x", 65),
        lambda: setattr(scene.render, "resolution_x", WIDTH),
    )

    def start_after_end() -> None:
        s.normal.start, s.normal.end = 0.7, 0.3

    def reset_window() -> None:
        s.normal.start, s.normal.end = 0.0, 1.0

    case("start_after_end", start_after_end, reset_window)

    def canny_low_above_high() -> None:
        s.canny.low, s.canny.high = 210, 200

    def reset_thresholds() -> None:
        s.canny.low, s.canny.high = 80, 160

    case("canny_low_above_high", canny_low_above_high, reset_thresholds)

    def lights_out(hidden: bool = True) -> None:
        # No lamp and no world: everything renders black.
        bpy.data.objects["Sun"].hide_render = hidden

    case("canny_flat_colour_render", lights_out, lambda: lights_out(False))
    case("nothing_selected", select_only, lambda: select_only("Cube", "Sphere"))
    case(
        "unknown_model",
        lambda: setattr(s, "model", "no-such-model"),
        lambda: setattr(s, "model", ""),
    )
    case(
        "unknown_control_model",
        lambda: setattr(s.depth, "model", "no-such-depth"),
        lambda: setattr(s.depth, "model", ""),
    )
    if not bpy.app.online_access:
        # Refused before any connection: no packet is sent to this documentation address.
        case(
            "offline_remote_address",
            lambda: setattr(prefs, "address", "192.0.2.7:50051"),
            lambda: setattr(prefs, "address", good_address),
        )

    prefs.address, prefs.token = args.token_server, args.token
    try:
        right_token = sorted(bpy.ops.tether.refresh_models())
    except RuntimeError as error:
        right_token = [str(error)]
    reset_server()
    return {"cases": cases, "right_token_refresh": right_token}


def check_unregister() -> dict[str, Any]:
    from tether_blender import generation

    disable()
    return {
        "operators_left": [name for name in dir(bpy.types) if name.startswith("TETHER_OT_")],
        "scene_property": hasattr(bpy.types.Scene, "tether"),
        "panel": hasattr(bpy.types, "VIEW3D_PT_tether"),
        "running": generation.current() is not None,
        "timer": bpy.app.timers.is_registered(generation.tick),
    }


def _pixels(image: bpy.types.Image) -> np.ndarray:
    values = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(values)
    return values.reshape(image.size[1], image.size[0], -1)


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
