"""Run the Blender add-on in Blender (the ``bpy`` module) and measure what it does.

Run by tests/test_blender.py with the .venv-blender Python, sdk/ and clients/blender on
PYTHONPATH:

    python tests/blender/addon_checks.py --server HOST:PORT \
        --token-server HOST:PORT --token SECRET --out results.json

This script measures; the pytest side holds the expectations. Every section writes its
measurements, or the traceback that stopped it (as "crashed"), into one JSON object, so
that one broken section does not hide the others. The scene and its ray-cast ground
truth are in scene_geometry.py, the sections about maps and projection in map_checks.py.
"""

from __future__ import annotations

import argparse
import json
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
import map_checks
import numpy as np
import tether
from scene_geometry import WIDTH, build_scene, changes, image_pixels, select_only, snapshot

ADDON = "tether_blender"


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
    # The add-on's colour render of the scene just before the first Generate.
    colour: list[Any] = []
    calls = recorder.calls
    with tempfile.TemporaryDirectory(prefix="tether-blender-test-") as temp:
        section(results, "generate", lambda: check_generate(recorder, colour))
        section(results, "panel", check_panel)
        section(results, "exr_layouts", lambda: map_checks.check_exr_layouts(Path(temp)))
        section(results, "maps", lambda: map_checks.check_maps(calls))
        section(results, "canny", lambda: map_checks.check_canny(calls, colour[0], args.server))
        section(results, "projection", lambda: map_checks.check_projection(last().image_name))
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

    def operator(self, idname: str, icon: str = "NONE", **_options: Any) -> Any:
        self._icon(icon)
        module, _, name = idname.partition(".")
        if not hasattr(bpy.types, f"{module.upper()}_OT_{name}"):
            self.log["problems"].append(f"no operator {idname}")
        self.log["operators"].append(idname)
        return types.SimpleNamespace()  # the operator's properties, which draw code sets

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
                for name in (
                    "generate",
                    "bake_texture",
                    "cancel",
                    "refresh_models",
                    "project_result",
                )
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


def check_generate(recorder: StreamRecorder, colour: list[Any]) -> dict[str, Any]:
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
    colour.append(passes.render_passes(bpy.context.scene, layer, data=False, colour=True))
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
        "image_pixels_nonblank": bool(image and image_pixels(image)[..., :3].std() > 0),
        "requests": len(recorder.calls),
        "prompt": prompt,
        "options": plain_options(options),
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


def plain_options(options: dict[str, Any]) -> dict[str, Any]:
    """A request's options but its controls, as JSON: LoRAs as [name, weight]."""
    plain = {k: v for k, v in options.items() if k not in ("controls", "init_image")}
    plain["loras"] = [[lora.name, lora.weight] for lora in options.get("loras", [])]
    return plain


def check_panel() -> dict[str, Any]:
    from tether_blender.preferences import draw_preferences

    log: dict[str, list[str]] = {"props": [], "operators": [], "labels": [], "problems": []}
    draw_preferences(RecordingLayout(log), bpy.context.preferences.addons[ADDON].preferences)
    return {"after_generate": draw_panel(), "preferences": log}


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
        renders.append({**options, "camera": options["camera"].name})
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
        cases[name] = {"error": error, **changes(before, after)}

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


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
