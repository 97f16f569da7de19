"""Run the add-on's Bake Texture in Blender (the ``bpy`` module) and measure what it does.

Run by tests/test_blender_bake.py with the .venv-blender Python, sdk/ and clients/blender
on PYTHONPATH:

    python tests/blender/bake_checks.py --server HOST:PORT --out results.json

This script measures; the pytest side holds the expectations. Each section writes its
measurements, or the traceback that stopped it, into one JSON object. The scene, and what
each camera sees of the target's texels found independently with Blender's ray casts and
mathutils, are in bake_scene.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from addon_checks import ADDON, draw_panel, enable, section
from bake_scene import (
    HEIGHT,
    TEXTURE,
    WIDTH,
    CubeTexels,
    Sight,
    bilinear,
    build_scene,
    cube_texels,
    hit_uvs,
    sight,
)
from scene_geometry import changes, image_pixels, select_only, snapshot
from tether import background

MAGENTA_CLEAR = [255, 0, 255, 0]


class Recorder:
    """Wraps background.Task.generate, through which the add-on sends every request: keeps
    each request's options and, when it finished, its result."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        original = background.Task.generate

        def generate(task: background.Task, client: Any, prompt: str, **options: Any) -> Any:
            call: dict[str, Any] = {"options": options, "result": None}
            self.calls.append(call)
            call["result"] = original(task, client, prompt, **options)
            return call["result"]

        background.Task.generate = generate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    results: dict[str, Any] = {}
    recorder = Recorder()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    enable()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.address = args.server
    build_scene()
    s = settings()
    s.prompt, s.steps, s.use_random_seed, s.seed = "painted wood", 2, False, 7
    s.texture_size, s.texture_margin, s.max_angle = TEXTURE, 2, math.radians(85)
    texels = cube_texels()
    sights = {name: sight(bpy.data.objects[name], texels) for name in "AB"}
    one: dict[str, Any] = {}
    section(results, "one_view", lambda: check_one_view(recorder, texels, sights, one))
    section(results, "two_views", lambda: check_two_views(recorder, texels, sights, one))
    section(results, "orbit", lambda: check_orbit(recorder, texels, one))
    section(results, "panel", check_panel)
    section(results, "cancel", lambda: check_cancel(recorder, one))
    section(results, "faults", lambda: check_faults(prefs))
    with tempfile.TemporaryDirectory(prefix="tether-bake-test-") as temp:
        section(results, "packed_round_trip", lambda: check_round_trip(Path(temp), True))
        section(results, "saved_round_trip", lambda: check_round_trip(Path(temp), False))
    args.out.write_text(json.dumps(results, indent=1))
    return 0


# -- helpers --------------------------------------------------------------------------------


def settings() -> Any:
    return bpy.context.scene.tether


def last() -> Any:
    from tether_blender import generation

    return generation.last()


def bake(views: str, *selected: str) -> str | None:
    """Bake Texture, waiting; the error it reported, or None."""
    settings().views = views
    select_only(*selected)
    try:
        bpy.ops.tether.bake_texture(wait=True)
    except RuntimeError as error:
        return str(error)
    return None


def texture_of(run: Any, kind: str = "textures") -> np.ndarray:
    """The run's image of the cube ("textures" or "masks") as uint8, top row first."""
    image = bpy.data.images[getattr(run, kind)["Cube"]]
    return np.round(image_pixels(image)[::-1] * 255).astype(np.uint8)


def texel_measures(
    texels: CubeTexels, texture: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The texture's RGBA and the mask's value at each texel of the cube."""
    return texture.reshape(-1, 4)[texels.index].astype(np.int64), mask.reshape(-1, 4)[
        texels.index, 0
    ]


def colour_error(rgba: np.ndarray, picture: np.ndarray, view: Sight, rows: np.ndarray) -> float:
    """Largest difference between the texels ``rows`` and the picture where ``view`` sees
    them (bilinear between the four pixel centres around each)."""
    if not rows.any():
        return math.inf
    expected = bilinear(picture, view.x[rows], view.y[rows])
    return float(np.abs(rgba[rows, :3] - expected).max())


def marked(rgba: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> float:
    """The share of the texels ``rows`` left marked: magenta, alpha 0, white in the mask."""
    ok = (rgba[rows] == MAGENTA_CLEAR).all(axis=1) & (mask[rows] == 255)
    return float(ok.mean())


def request_summary(call: dict[str, Any]) -> dict[str, Any]:
    options = call["options"]
    summary = {
        "seed": options["seed"],
        "controls": sorted(c.model for c in options["controls"]),
        "init_image": None,
        "mask": None,
    }
    if "init_image" in options:
        init, mask = np.asarray(options["init_image"]), np.asarray(options["mask"])
        summary["init_image"] = [str(init.dtype), list(init.shape)]
        summary["mask"] = [str(mask.dtype), list(mask.shape), sorted(np.unique(mask).tolist())]
        summary["strength"] = options["strength"]
        summary["mask_blur"] = options["mask_blur"]
    return summary


# -- sections --------------------------------------------------------------------------------


def check_one_view(
    recorder: Recorder, texels: CubeTexels, sights: dict[str, Sight], one: dict[str, Any]
) -> dict[str, Any]:
    recorder.calls.clear()
    error = bake("ACTIVE", "Cube")
    run = last()
    rgba, mask = texel_measures(texels, texture_of(run), texture_of(run, "masks"))
    a = sights["A"]
    picture = recorder.calls[0]["result"].image
    painted = rgba[:, 3] == 255
    one.update(painted=painted, texture=texture_of(run), share=run.painted["Cube"])
    cube = bpy.data.objects["Cube"]
    nodes = cube.active_material.node_tree.nodes
    return {
        "error": error,
        "outcome": list(run.outcome()),
        "requests": [request_summary(call) for call in recorder.calls],
        "texels": len(texels.index),
        "clearly_seen": int(a.clearly_seen.sum()),
        "clearly_unseen": int(a.clearly_unseen.sum()),
        "hidden_by_itself": int(a.hidden_by_itself.sum()),
        "hidden_by_other": int(a.hidden_by_other.sum()),
        "seen_colour_max_diff": colour_error(rgba, picture, a, a.clearly_seen),
        "seen_painted": float(painted[a.clearly_seen].mean()),
        "seen_not_in_mask": float((mask[a.clearly_seen] == 0).mean()),
        "unseen_marked": marked(rgba, mask, a.clearly_unseen),
        "hidden_by_itself_marked": marked(rgba, mask, a.hidden_by_itself),
        "hidden_by_other_marked": marked(rgba, mask, a.hidden_by_other),
        "painted_share": run.painted["Cube"],
        "painted_texels": int(painted.sum()),
        "material_images": [n.image.name for n in nodes if n.bl_idname == "ShaderNodeTexImage"],
        "material_uv_maps": [n.uv_map for n in nodes if n.bl_idname == "ShaderNodeUVMap"],
        "texture_name": run.textures["Cube"],
        "texture_size": list(bpy.data.images[run.textures["Cube"]].size),
        "packed": [bool(bpy.data.images[n["Cube"]].packed_file) for n in (run.textures, run.masks)],
        "mask_colourspace": bpy.data.images[run.masks["Cube"]].colorspace_settings.name,
    }


def check_two_views(
    recorder: Recorder, texels: CubeTexels, sights: dict[str, Sight], one: dict[str, Any]
) -> dict[str, Any]:
    recorder.calls.clear()
    error = bake("SELECTED", "Cube", "B", "A")
    run = last()
    rgba, mask = texel_measures(texels, texture_of(run), texture_of(run, "masks"))
    a, b = sights["A"], sights["B"]
    pictures = [call["result"].image for call in recorder.calls]
    only_a = a.clearly_seen & b.clearly_unseen
    only_b = b.clearly_seen & a.clearly_unseen
    neither = a.clearly_unseen & b.clearly_unseen
    return {
        "error": error,
        "outcome": list(run.outcome()),
        "baked": run.baked,
        "requests": [request_summary(call) for call in recorder.calls],
        "only_a": int(only_a.sum()),
        "only_b": int(only_b.sum()),
        "neither": int(neither.sum()),
        "only_a_colour_max_diff": colour_error(rgba, pictures[0], a, only_a),
        "only_b_colour_max_diff": colour_error(rgba, pictures[1], b, only_b),
        "neither_marked": marked(rgba, mask, neither),
        "painted_texels": int((rgba[:, 3] == 255).sum()),
        "painted_share": run.painted["Cube"],
        "conditioning": conditioning_measures(recorder.calls[1], one),
        # Seen by both: the second view kept the first one's paint there, so the blend
        # stays near the one-view texture (against a baseline of the same texels shuffled).
        "both": int((a.clearly_seen & b.clearly_seen).sum()),
        **kept_measures(rgba, one["texture"], texels, a.clearly_seen & b.clearly_seen),
    }


def conditioning_measures(call: dict[str, Any], one: dict[str, Any]) -> dict[str, Any]:
    """The second view's request against what the first view painted (the one-view bake,
    the same request): which of B's pixels show painted texels, found with B's own ray
    casts, and what the init image holds there."""
    options = call["options"]
    mask = np.asarray(options["mask"]).ravel()
    init = np.asarray(options["init_image"]).reshape(-1, 3).astype(np.float64)
    on_cube, uv = hit_uvs(bpy.data.objects["B"])
    texture = one["texture"]
    columns = np.clip((uv[:, 0] * TEXTURE).astype(int), 0, TEXTURE - 1)
    rows = np.clip(((1 - uv[:, 1]) * TEXTURE).astype(int), 0, TEXTURE - 1)
    painted = on_cube & (texture[rows, columns, 3] == 255)
    # Away from the painted area's border (every 4-neighbour agrees), where a pixel centre
    # and the texel grid may round either way.
    grid = painted.reshape(HEIGHT, WIDTH)
    padded = np.pad(grid, 1, mode="edge")
    steady = (
        (padded[:-2, 1:-1] == grid)
        & (padded[2:, 1:-1] == grid)
        & (padded[1:-1, :-2] == grid)
        & (padded[1:-1, 2:] == grid)
    ).ravel()
    kept = mask == 0
    expected = texture[rows, columns, :3].astype(np.float64)
    return {
        "kept_pixels": int(kept.sum()),
        "kept_show_painted": float(painted[kept].mean()),
        "painted_kept": float(kept[painted & steady].mean()),
        "unpainted_cube_repainted": float((~kept)[on_cube & ~painted & steady].mean()),
        "not_cube_repainted": float((~kept)[~on_cube].mean()),
        # The init image at kept pixels against the first texture at the texel B's ray
        # meets (nearest texel): close, against a baseline of the same pixels shuffled.
        "init_vs_texture": float(np.abs(init[kept] - expected[kept]).mean()),
        "init_vs_shuffled": float(
            np.abs(init[kept] - np.random.default_rng(0).permutation(expected[kept])).mean()
        ),
    }


def kept_measures(
    rgba: np.ndarray, first: np.ndarray, texels: CubeTexels, rows: np.ndarray
) -> dict[str, float]:
    before = first.reshape(-1, 4)[texels.index][rows, :3].astype(np.float64)
    after = rgba[rows, :3].astype(np.float64)
    shuffled = np.random.default_rng(0).permutation(before)
    return {
        "both_vs_one_view": float(np.abs(after - before).mean()),
        "both_vs_shuffled": float(np.abs(after - shuffled).mean()),
    }


def check_orbit(recorder: Recorder, texels: CubeTexels, one: dict[str, Any]) -> dict[str, Any]:
    from tether_blender.view_cameras import ORBIT_COLLECTION

    s = settings()
    s.orbit_count = 4
    recorder.calls.clear()
    error = bake("ORBIT", "Cube")
    run = last()
    rgba, mask = texel_measures(texels, texture_of(run), texture_of(run, "masks"))
    cube = bpy.data.objects["Cube"].data
    bottom = np.array([cube.polygons[p].normal.z < -0.99 for p in texels.polygons])
    cameras = list(bpy.data.collections[ORBIT_COLLECTION].objects)
    centre = np.array([0.15, -0.15, 0.0])  # of the box around the cube and its bump
    misses = []
    for camera in cameras:
        origin = np.array(camera.matrix_world.translation)
        axis = -np.array(camera.matrix_world.to_3x3().col[2])
        offset = centre - origin
        misses.append(float(np.linalg.norm(offset - (offset @ axis) * axis)))
    return {
        "error": error,
        "outcome": list(run.outcome()),
        "cameras": sorted(c.name for c in cameras if c.type == "CAMERA"),
        "camera_elevations": [
            round(
                math.degrees(
                    math.asin(
                        (c.matrix_world.translation.z - centre[2])
                        / np.linalg.norm(np.array(c.matrix_world.translation) - centre)
                    )
                ),
                3,
            )
            for c in cameras
        ],
        "axis_misses_centre_max": max(misses),
        "requests": [request_summary(call) for call in recorder.calls],
        "painted_share": run.painted["Cube"],
        "one_view_share": one["share"],
        "bottom_texels": int(bottom.sum()),
        "bottom_marked": marked(rgba, mask, bottom),
    }


def check_panel() -> dict[str, Any]:
    s = settings()
    s.views = "ORBIT"
    orbit = draw_panel()
    s.views = "ACTIVE"
    return {"orbit": orbit, "active": draw_panel()}


def check_cancel(recorder: Recorder, one: dict[str, Any]) -> dict[str, Any]:
    """As the UI runs it: Bake Texture returns at once, the script plays the timer and
    presses Cancel as soon as the first view is baked in, while the second one starts."""
    from tether_blender import generation

    s = settings()
    s.steps, s.views = 40, "SELECTED"
    select_only("Cube", "A", "B")
    recorder.calls.clear()
    result = bpy.ops.tether.bake_texture()
    labels: list[str] = []
    cancel_result = None
    deadline = time.monotonic() + 300
    while generation.current() is not None and time.monotonic() < deadline:
        running = generation.current()
        if running.baked and cancel_result is None:
            labels = draw_panel()["labels"]
            cancel_result = sorted(bpy.ops.tether.cancel())
        generation.tick()
        time.sleep(0.02)
    if bpy.app.timers.is_registered(generation.tick):
        bpy.app.timers.unregister(generation.tick)
    s.steps = 2
    run = last()
    return {
        "bake_result": sorted(result),
        "cancel_result": cancel_result,
        "labels_while_running": labels,
        "cancelled": run.cancelled,
        "error": run.error,
        "baked": run.baked,
        "requests": len(recorder.calls),
        "later_finished": [call["result"] is not None for call in recorder.calls[1:]],
        "outcome": list(run.outcome()),
        "painted_share": run.painted.get("Cube"),
        "one_view_share": one["share"],
        "packed": bool(bpy.data.images[run.textures["Cube"]].packed_file),
    }


def check_faults(prefs: Any) -> dict[str, Any]:
    from tether_blender.view_cameras import ORBIT_COLLECTION

    scene = bpy.context.scene
    s = settings()
    flat = bpy.data.objects.new("Flat", bpy.data.meshes.new("Flat"))
    flat.data.from_pydata([(0, 0, -3), (1, 0, -3), (0, 1, -3)], [], [(0, 1, 2)])
    scene.collection.objects.link(flat)
    good_address = prefs.address
    cases: dict[str, Any] = {}

    def case(name: str, views: str, selected: tuple[str, ...], change: Any, undo: Any) -> None:
        change()
        s.views = views
        select_only(*selected)
        before = snapshot()
        orbit_before = len(bpy.data.collections[ORBIT_COLLECTION].objects)
        error = bake(views, *selected)
        after = snapshot()
        undo()
        orbit_after = len(bpy.data.collections[ORBIT_COLLECTION].objects)
        cases[name] = {
            "error": error,
            **changes(before, after),
            "orbit_cameras_added": orbit_after - orbit_before,
        }

    def nothing() -> None:
        pass

    camera = scene.camera
    case("no_mesh_selected", "ACTIVE", ("A",), nothing, nothing)
    case("no_uv_map", "ACTIVE", ("Cube", "Flat"), nothing, nothing)
    case("no_camera_selected", "SELECTED", ("Cube",), nothing, nothing)
    case(
        "no_active_camera",
        "ACTIVE",
        ("Cube",),
        lambda: setattr(scene, "camera", None),
        lambda: setattr(scene, "camera", camera),
    )
    case(
        "orbit_unreachable",
        "ORBIT",
        ("Cube",),
        lambda: setattr(prefs, "address", "127.0.0.1:1"),
        lambda: setattr(prefs, "address", good_address),
    )
    bpy.data.objects.remove(flat)
    return {"cases": cases}


def check_round_trip(folder: Path, packed: bool) -> dict[str, Any]:
    """The cube's baked texture through a saved .blend: packed into it (baked while the
    file was never saved), or saved as PNG files next to it (baked after saving)."""
    blend = folder / "scene.blend"
    error = None
    if packed:
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # the earlier bake's packed images
    else:
        error = bake("ACTIVE", "Cube")  # the file is saved: the images go next to it
        bpy.ops.wm.save_mainfile()
    material = bpy.data.objects["Cube"].active_material
    image = next(n.image for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
    name, before = image.name, image_pixels(image).copy()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    material = bpy.data.objects["Cube"].active_material
    nodes = material.node_tree.nodes
    image = next(n.image for n in nodes if n.bl_idname == "ShaderNodeTexImage")
    after = image_pixels(image)
    return {
        "error": error,
        "image": name,
        "same_image": image.name == name,
        "packed": bool(image.packed_file),
        "filepath": image.filepath,
        "file_next_to_blend": (folder / Path(bpy.path.abspath(image.filepath)).name).is_file()
        and Path(bpy.path.abspath(image.filepath)).parent == folder,
        "max_diff": float(np.abs(after - before).max()) if after.shape == before.shape else None,
        "size": list(image.size),
        "has_missing_texels": bool((np.round(after[..., 3] * 255) == 0).any()),
        "uv_maps": [n.uv_map for n in nodes if n.bl_idname == "ShaderNodeUVMap"],
    }


if __name__ == "__main__":
    sys.exit(main())
