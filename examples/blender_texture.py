"""Texture blockout geometry with the Tether Blender add-on.

Builds a small blockout scene (ground, a wall, two crates, a sun, a camera), renders its
depth and normal passes and its colour picture (for the canny unit), generates a picture
on a Tether server and projects it onto the meshes as a texture, then saves the .blend
with the texture next to it. With ``--bake orbit`` it bakes the two crates' UV textures
from an orbit of cameras instead (Bake Texture), and ``--picture`` renders the textured
scene from a viewpoint no view had.

    python -m tether serve &                      # a server (tiny model: noise, not art)
    clients/blender/setup_test_env.sh             # Blender as a Python module (.venv-blender)
    PYTHONPATH=sdk:clients/blender .venv-blender/bin/python examples/blender_texture.py \
        --server 127.0.0.1:50051 --out /tmp/tether-texture/scene.blend
    PYTHONPATH=sdk:clients/blender .venv-blender/bin/python examples/blender_texture.py \
        --bake orbit --picture /tmp/tether-bake/picture.png --out /tmp/tether-bake/scene.blend

Or with Blender itself, after installing the extension zip from clients/blender/build.py:

    blender --background --python examples/blender_texture.py -- --out /tmp/scene.blend
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import bpy
from mathutils import Vector


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Texture a blockout scene with Tether")
    parser.add_argument("--server", default="127.0.0.1:50051", help="Tether server host:port")
    parser.add_argument("--token", default="", help="the server's token, if it has one")
    parser.add_argument("--prompt", default="old brick warehouse yard, overcast, photo")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--no-canny", action="store_true", help="for a server without a canny control model"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to save the .blend")
    parser.add_argument(
        "--bake",
        choices=["active", "orbit"],
        help="bake the crates' UV textures from the camera or an orbit, instead of projecting",
    )
    parser.add_argument("--orbit", type=int, default=4, help="cameras of the orbit")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument(
        "--picture", type=Path, help="render the textured scene from another viewpoint (PNG)"
    )
    args = parser.parse_args(argv)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    module = enable_addon()
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.address, prefs.token = args.server, args.token

    build_blockout()
    # Save first: the texture is then written next to the .blend instead of packed into it.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.out))

    settings = bpy.context.scene.tether
    settings.prompt = args.prompt
    settings.negative_prompt = "blurry, text, watermark"
    settings.steps = args.steps
    settings.depth.weight, settings.depth.end = 1.0, 0.8
    settings.normal.weight = 0.7
    # Canny on the colour render keeps the crates' edges and the sun's shadows in place;
    # over the first half of the steps only, so the details are left to the prompt.
    settings.canny.enabled = not args.no_canny
    settings.canny.weight, settings.canny.end = 0.5, 0.5
    settings.canny.low, settings.canny.high = 50, 150
    settings.project_onto_selected = not args.bake
    settings.views = (args.bake or "active").upper()
    settings.orbit_count = args.orbit
    settings.texture_size = args.texture_size
    # Projection: every mesh. Bake Texture: the crates, whose UV maps (the cube's cross)
    # have room for every side; the orbit goes around them.
    textured = ("Crate A", "Crate B") if args.bake else ("Ground", "Wall", "Crate A", "Crate B")
    for obj in bpy.context.scene.objects:
        obj.select_set(obj.name in textured)

    try:
        # wait=True: a script (and background mode, where timers never run) blocks until
        # the job is done; in the UI the same operators return at once.
        if args.bake:
            bpy.ops.tether.bake_texture(wait=True)
        else:
            bpy.ops.tether.generate(wait=True)
    except RuntimeError as error:  # the operator's ERROR report, e.g. server unreachable
        print(f"blender_texture: {error}", file=sys.stderr)
        return 1
    bpy.ops.wm.save_mainfile()
    print(f"saved {args.out} with the textures beside it")
    if args.picture:
        render_picture(args.picture)
        print(f"rendered {args.picture}")
    return 0


def render_picture(path: Path) -> None:
    """The scene as it now looks, from above and to the left of the crates (a viewpoint
    neither the camera nor the orbit had), rendered with Cycles on the CPU."""
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Picture", bpy.data.cameras.new("Picture"))
    scene.collection.objects.link(camera)
    camera.location = (-4.5, -3.5, 4.0)
    camera.rotation_euler = (
        (Vector((0.0, 0.0, 0.5)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    )
    camera.data.lens = 40
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 32
    scene.render.resolution_x, scene.render.resolution_y = 384, 288
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.render.render(write_still=True)


def enable_addon() -> str:
    """The add-on's module name: the installed extension if Blender has it, otherwise the
    source folder clients/blender on sys.path (the SDK then comes from sdk/)."""
    for addon in bpy.context.preferences.addons:
        if addon.module.endswith("tether_blender"):
            return addon.module
    bpy.ops.preferences.addon_enable(module="tether_blender")
    return "tether_blender"


def build_blockout() -> None:
    import bmesh  # importable only once bpy is (Blender as a module)

    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=12)
    bpy.context.active_object.name = "Ground"
    bpy.ops.mesh.primitive_cube_add(size=1, location=(0, 3, 1.5), scale=(5, 0.3, 1.5))
    bpy.context.active_object.name = "Wall"
    bpy.ops.mesh.primitive_cube_add(size=1.2, location=(-1.2, 0.5, 0.6), rotation=(0, 0, 0.4))
    bpy.context.active_object.name = "Crate A"
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(1.0, -0.4, 0.4), rotation=(0, 0, -0.2))
    bpy.context.active_object.name = "Crate B"
    # The projection gives each vertex its UV and faces interpolate them linearly: large
    # faces seen in perspective need more vertices (a Subdivision modifier would not help,
    # it interpolates the same UVs). Bake Texture does not need them; the UVs that the
    # primitives come with are kept (interpolated) by the subdivision.
    for obj in scene.objects:
        mesh = bmesh.new()
        mesh.from_mesh(obj.data)
        bmesh.ops.subdivide_edges(mesh, edges=mesh.edges[:], cuts=8, use_grid_fill=True)
        mesh.to_mesh(obj.data)
        mesh.free()
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (4.5, -6.0, 3.0)
    camera.rotation_euler = (
        (Vector((0, 1, 0.8)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    )
    camera.data.lens = 35
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = 512, 384
    scene.render.resolution_percentage = 100
    light = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    # Low and from the side: the crates' faces differ in brightness and cast shadows, which
    # is what the canny unit sees of them.
    light.rotation_euler = (math.radians(60), 0, math.radians(-40))
    scene.collection.objects.link(light)


if __name__ == "__main__":
    arguments = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(arguments))
