"""The add-on's model and LoRA choice, Generate's tiling and Tileable Material, in Blender
(the ``bpy`` module) against a real server with two base models, two LoRAs and a normal
ControlNet. Run by tests/test_blender_material.py with the .venv-blender Python, sdk/ and
clients/blender on PYTHONPATH:

    python tests/blender/material_checks.py --server HOST:PORT --out results.json \
        [--picture docs/blender_tileable.png]

This script measures; the pytest side holds the expectations. ``--picture`` also renders
the README's picture: the untiled and the tiled albedo, each repeated 2 x 2 on a plane
(docs/blender_tileable.png is that render quantised to 256 colours with pillow, to keep
the repository small).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import bpy
import numpy as np
import tether
import tether.maps
from addon_checks import (
    ADDON,
    StreamRecorder,
    draw_panel,
    enable,
    generate_expecting_error,
    last,
    plain_options,
    section,
    settings,
)
from scene_geometry import build_scene, image_pixels, select_only

SIZE = 128  # the tileable texture's side


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--picture", type=Path)
    args = parser.parse_args()

    results: dict[str, Any] = {"blender": bpy.app.version_string}
    recorder = StreamRecorder()
    recorder.install()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    enable()
    bpy.context.preferences.addons[ADDON].preferences.address = args.server
    build_scene()
    s = settings()
    s.steps, s.use_random_seed, s.seed = 4, False, 5
    s.depth.enabled = False  # the server has a normal ControlNet only
    s.prompt = "weathered stone"
    section(results, "catalog", check_catalog)
    section(results, "loras", lambda: check_loras(recorder, args.server))
    section(results, "tiling", lambda: check_tiling(recorder, args.server))
    section(results, "lora_faults", check_lora_faults)
    section(results, "material_faults", check_material_faults)
    keep = args.picture is not None
    section(results, "material", lambda: check_material(recorder, args.server, keep))
    section(results, "directx", lambda: check_directx(recorder))
    if args.picture:
        section(results, "picture", lambda: render_picture(results, args.picture))
    args.out.write_text(json.dumps(results, indent=1))
    return 0


def check_catalog() -> dict[str, Any]:
    from tether_blender import catalog
    from tether_blender import settings as settings_module

    refreshed = sorted(bpy.ops.tether.refresh_models())
    return {
        "refresh": refreshed,
        "models": catalog.base_model_names(),
        "loras": catalog.lora_names(),
        # What the text fields' search lists offer as the user types.
        "model_search_r": settings_module._search_base_models(settings(), bpy.context, "R"),
        "lora_search_sty": settings_module._search_loras(None, bpy.context, "sty"),
    }


def set_loras(*rows: tuple[str, float, bool]) -> None:
    s = settings()
    s.loras.clear()
    for name, weight, enabled in rows:
        bpy.ops.tether.add_lora()
        row = s.loras[-1]
        row.lora, row.weight, row.enabled = name, weight, enabled


def generate_and_resend(
    recorder: StreamRecorder, server: str, changes: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Generate; then send its request again through the SDK, as it is and with each of
    ``changes``: the picture must be the server's answer to the request the add-on made,
    and what each change undoes must matter."""
    recorder.calls.clear()
    error = generate_expecting_error()
    requests = len(recorder.calls)
    prompt, options = recorder.calls[-1]
    image = image_pixels(bpy.data.images[last().image_name])[::-1, :, :3]
    picture = np.round(image * 255).astype(np.uint8)
    with tether.Client(server) as client:
        again = client.generate(prompt, **options).image
        changed = {
            name: client.generate(prompt, **{**options, **change}).image
            for name, change in changes.items()
        }
    return {
        "error": error,
        "requests": requests,
        "options": plain_options(options),
        "same_request_same_picture": bool(np.array_equal(again, picture)),
        **{
            f"{name}_max_diff": int(np.abs(other.astype(int) - picture).max())
            for name, other in changed.items()
        },
    }


def check_loras(recorder: StreamRecorder, server: str) -> dict[str, Any]:
    """Generate with the second model and two LoRAs (and a disabled row)."""
    s = settings()
    s.model = "brick"
    set_loras(("detail", 0.5, True), ("style", 1.0, True), ("missing", 1.0, False))
    select_only("Cube")
    panel = draw_panel()
    changes = {"without_loras": {"loras": []}, "other_model": {"model": "stone"}}
    measured = {**generate_and_resend(recorder, server, changes), "panel": panel}
    s.model = ""
    set_loras()
    return measured


def check_tiling(recorder: StreamRecorder, server: str) -> dict[str, Any]:
    settings().tiling = "X"
    measured = generate_and_resend(recorder, server, {"untiled": {"tiling": None}})
    settings().tiling = "NONE"
    return measured


def check_lora_faults() -> dict[str, Any]:
    """Refused before anything renders; a good Generate works right after."""
    cases = {}
    set_loras(("no-such-lora", 1.0, True))
    cases["unknown_lora"] = generate_expecting_error()
    set_loras(("detail", 0.5, True), ("detail", 1.0, True))
    cases["lora_twice"] = generate_expecting_error()
    set_loras(("style", 0.7, True))
    cases["good_after"] = generate_expecting_error()
    set_loras()
    return cases


def tileable_normals(size: int) -> np.ndarray:
    """Tangent-space unit normals of a periodic bump field, (H, W, 3), top row first: x
    along the texture's right, y along its up."""
    y, x = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    nx, ny = 0.4 * np.cos(2 * x), 0.4 * np.sin(3 * y)
    return np.stack([nx, ny, np.sqrt(1 - nx**2 - ny**2)], axis=2)


def tileable_colour(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    colour = [0.5 + 0.3 * np.sin(x + y), 0.5 + 0.3 * np.cos(2 * x), 0.5 + 0.3 * np.sin(y)]
    return np.stack(colour, axis=2)


def new_image(name: str, rgb: np.ndarray, *, data: bool) -> bpy.types.Image:
    """An 8-bit image holding ``rgb`` (0..1, top row first)."""
    height, width = rgb.shape[:2]
    image = bpy.data.images.new(name, width, height, alpha=False)
    if data:
        image.colorspace_settings.name = "Non-Color"
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = np.round(rgb * 255) / 255
    image.pixels.foreach_set(rgba[::-1].ravel())
    image.pack()  # kept in the .blend: an image made in a script has no file
    return image


def add_plane(name: str, location: tuple[float, float, float]) -> bpy.types.Object:
    bpy.ops.mesh.primitive_plane_add(size=2, location=location)
    plane = bpy.context.active_object
    plane.name = name
    return plane


def normal_map_material(image: bpy.types.Image) -> bpy.types.Material:
    """A material whose tangent-space Normal Map node reads ``image``: what an artist's
    existing material has."""
    material = bpy.data.materials.new("Artist's Stone")
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    normal = nodes.new("ShaderNodeNormalMap")
    links.new(texture.outputs["Color"], normal.inputs["Color"])
    shader = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    links.new(normal.outputs["Normal"], shader.inputs["Normal"])
    return material


def check_material_faults() -> dict[str, Any]:
    s = settings()
    cases = {}
    plane = add_plane("Bare", (0, 0, -5))
    s.material_size = SIZE
    cases["no_normal_map"] = tileable_expecting_error()
    s.material_normal_map = new_image("Wrong Size Start", np.zeros((8, 8, 3)), data=True)
    s.material_start_image = s.material_normal_map
    cases["start_image_size"] = tileable_expecting_error()
    s.material_start_image = s.material_normal_map = None
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = bpy.data.objects["Camera"]
    cases["not_a_mesh"] = tileable_expecting_error()
    bpy.data.objects.remove(plane)
    return cases


def tileable_expecting_error() -> str | None:
    try:
        bpy.ops.tether.tileable_material(wait=True)
    except RuntimeError as error:
        return str(error)
    return None


def wrap_step(image: np.ndarray, axis: int) -> tuple[float, float]:
    """(the mean step across the wrap edge, the 95th percentile of the interior steps)
    along ``axis`` (1: last column to first, 0: last row to first); image in 0..255."""
    image = image.astype(np.float32) / 255
    steps = np.abs(image - np.roll(image, -1, axis=axis)).mean(axis=(1 - axis, 2))
    return float(steps[-1]), float(np.percentile(steps[:-1], 95))


def check_material(recorder: StreamRecorder, server: str, keep_untiled: bool) -> dict[str, Any]:
    """The active plane's own material reads a tileable normal map; Tileable Material with
    a tileable Start Image. The same request is sent again without tiling (its picture
    kept for the README's with ``keep_untiled``)."""
    s = settings()
    normals = tileable_normals(SIZE)
    # Blender's (OpenGL) encoding: (n + 1) / 2 on every axis, green up.
    normal_image = new_image("Stone Normal", (normals + 1) / 2, data=True)
    plane = add_plane("Floor", (0, 0, 0))
    plane.data.materials.append(normal_map_material(normal_image))
    s.material_size, s.material_weight, s.material_repeat = SIZE, 0.8, 2
    s.material_start_image = new_image("Stone Start", tileable_colour(SIZE), data=False)
    s.material_strength = 0.5
    recorder.calls.clear()
    error = tileable_expecting_error()
    done = last()
    prompt, options = recorder.calls[-1]
    albedo = bpy.data.images.get(done.image_name)
    texture = np.round(image_pixels(albedo)[::-1, :, :3] * 255).astype(np.uint8)
    with tether.Client(server) as client:
        again = client.generate(prompt, **options).image
        untiled = client.generate(prompt, **{**options, "tiling": None}).image
    (control,) = options["controls"]
    sent = np.asarray(control.image)
    expected = tether.maps.normals_from_view(normals)
    material = plane.material_slots[0].material
    nodes = material.node_tree.nodes
    shader = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    colour_node = shader.inputs["Base Color"].links[0].from_node
    normal_node = shader.inputs["Normal"].links[0].from_node
    normal_texture = normal_node.inputs["Color"].links[0].from_node
    mapping = next(n for n in nodes if n.bl_idname == "ShaderNodeMapping")
    return {
        "error": error,
        "outcome": list(done.outcome()),
        "options": plain_options(options),
        "init_image": list(np.asarray(options["init_image"]).shape),
        "control": [control.model, control.weight, control.resize, list(sent.shape)],
        "map_vs_expected_max_diff": float(np.abs(sent - expected).max()),
        # Where the surface leans right (+x, column 0) red is below 0.5: red = left.
        "red_where_facing_right": float(sent[:, 0, 0].mean()),
        "green_where_facing_up": float(sent[SIZE // 12, :, 1].mean()),  # ny max at row H/12
        "albedo_name": albedo.name,
        "albedo_size": list(albedo.size),
        "albedo_packed": bool(albedo.packed_file),
        "albedo_is_the_result": bool(np.array_equal(again, texture)),
        "material": material.name,
        "slots": [slot.material.name for slot in plane.material_slots],
        "colour_image": [colour_node.image.name, colour_node.extension],
        "normal_node": [normal_node.bl_idname, normal_node.space, normal_node.uv_map],
        "normal_image": [normal_texture.image.name, normal_texture.image.colorspace_settings.name],
        "mapping_scale": list(mapping.inputs["Scale"].default_value),
        "tiled": {axis: wrap_step(texture, i) for axis, i in (("x", 1), ("y", 0))},
        "untiled": {axis: wrap_step(untiled, i) for axis, i in (("x", 1), ("y", 0))},
        "untiled_pixels": untiled.tolist() if keep_untiled else None,
    }


def check_directx(recorder: StreamRecorder) -> dict[str, Any]:
    """The same normals in a DirectX-style image (green down), chosen in the panel rather
    than found in the material, on another plane, at 64 x 64 from the prompt alone."""
    s = settings()
    size = 64
    normals = tileable_normals(size)
    flipped = normals * np.array([1.0, -1.0, 1.0])
    s.material_normal_map = new_image("Stone Normal DX", (flipped + 1) / 2, data=True)
    s.material_green_down, s.material_size, s.material_start_image = True, size, None
    add_plane("Wall", (0, 0, -3))
    recorder.calls.clear()
    error = tileable_expecting_error()
    s.material_normal_map, s.material_green_down = None, False
    _, options = recorder.calls[-1]
    (control,) = options["controls"]
    expected = tether.maps.normals_from_view(normals)
    nodes = bpy.data.objects["Wall"].material_slots[0].material.node_tree.nodes
    normal_map = next(n for n in nodes if n.bl_idname == "ShaderNodeNormalMap")
    join = normal_map.inputs["Color"].links[0].from_node
    flip = join.inputs["Green"].links[0].from_node
    return {
        "error": error,
        "init_image": "init_image" in options,
        "map_vs_expected_max_diff": float(np.abs(np.asarray(control.image) - expected).max()),
        "green_path": [
            join.bl_idname,
            flip.bl_idname,
            flip.operation,
            flip.inputs[0].default_value,
        ],
        "flip_reads_green": flip.inputs[1].links[0].from_socket.name,
    }


def render_picture(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """Two planes seen from above under a low sun: left the untiled picture, right the
    tiled albedo, each in the add-on's material repeated 2 x 2 with the normal map."""
    from tether_blender.materials import tileable_material

    material = results["material"]
    floor = bpy.data.objects["Floor"]
    floor.location.x = 1.1
    normal = bpy.data.images["Stone Normal"]
    untiled = np.asarray(material["untiled_pixels"], dtype=np.float32) / 255
    image = new_image("Untiled", untiled, data=False)
    image.colorspace_settings.name = "sRGB"
    left = add_plane("Untiled", (-1.1, 0, 0))
    left.data.materials.append(
        tileable_material("Untiled", image, normal, "UVMap", repeat=2, green_down=False)
    )
    for name in ("Sphere", "Cube", "Wall"):
        bpy.data.objects[name].hide_render = True
    scene = bpy.context.scene
    camera = scene.camera
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 4.4
    camera.location = (0, 0, 5)
    camera.rotation_mode = "XYZ"
    camera.rotation_euler = (0, 0, 0)
    bpy.data.objects["Sun"].rotation_euler = (math.radians(50), 0, math.radians(30))
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.render.resolution_x, scene.render.resolution_y = 640, 300
    with tempfile.TemporaryDirectory() as folder:
        scene.render.filepath = str(Path(folder) / "picture.png")
        bpy.ops.render.render(write_still=True)
        path.write_bytes(Path(scene.render.filepath).read_bytes())
    return {"written": str(path)}


if __name__ == "__main__":
    sys.exit(main())
