"""The Blender add-on (clients/blender) in real Blender, against a real Tether server.

Blender runs as the ``bpy`` module from the package index, in its own venv
(.venv-blender, made by clients/blender/setup_test_env.sh: bpy needs numpy<2). The scripts
in tests/blender/ run there as subprocesses and report measurements as JSON; the
expectations are here. Blender 4.2 to 4.5 are supported too but not tested: their bpy
wheels need Python 3.11 as well and would each need their own venv of about 1 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from conftest import Server

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "clients" / "blender" / "setup_test_env.sh"
VENV = ROOT / ".venv-blender"
CHECKS = ROOT / "tests" / "blender" / "addon_checks.py"
INSTALL_CHECK = ROOT / "tests" / "blender" / "extension_install_check.py"
BUILD = ROOT / "clients" / "blender" / "build.py"
EXAMPLE = ROOT / "examples" / "blender_texture.py"
TOKEN = "blender-test-token"
WIDTH, HEIGHT = 64, 48  # as in tests/blender/scene_geometry.py
PLATFORM_WHEEL_TAGS = {
    "linux-x64": ("manylinux", "x86_64"),
    "windows-x64": ("win_amd64", "win_amd64"),
    "macos-arm64": ("macosx", ("arm64", "universal2")),
    "macos-x64": ("macosx", ("x86_64", "universal2")),
}


@pytest.fixture(scope="module")
def blender_python() -> Path:
    """The venv's Python with bpy; the setup script returns at once when it is ready."""
    subprocess.run(["bash", str(SETUP), str(VENV)], check=True, timeout=900)
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def token_server() -> Iterator[str]:
    """A second server that requires a token, for the wrong-token case."""
    running = Server("--token", TOKEN).wait_serving()
    yield running.address
    running.stop()


def run_in_blender(
    python: Path,
    script: Path,
    args: list[str],
    folder: Path,
    pythonpath: list[Path],
    timeout: float = 300,
) -> dict[str, Any]:
    out = folder / f"{script.stem}.json"
    env = {
        **os.environ,
        # Blender's config (recent files, installed extensions) goes here, not to ~/.config.
        "BLENDER_USER_RESOURCES": str(folder / "blender-user"),
    }
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    completed = subprocess.run(
        [str(python), str(script), *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(
    blender_python: Path, server: str, token_server: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("blender-addon")
    return run_in_blender(
        blender_python,
        CHECKS,
        ["--server", server, "--token-server", token_server, "--token", TOKEN],
        folder,
        [ROOT / "sdk", ROOT / "clients" / "blender"],
    )


def part(results: dict[str, Any], name: str) -> dict[str, Any]:
    value = results[name]
    if "crashed" in value:
        pytest.fail(f"{name} crashed in Blender:\n{value['crashed']}")
    return value


@pytest.fixture(scope="module")
def built_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("blender-dist")
    completed = subprocess.run(
        [sys.executable, str(BUILD), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    zips = [Path(line) for line in completed.stdout.split()]
    return {z.name.rsplit("-", 1)[1].removesuffix(".zip").replace("_", "-"): z for z in zips}


# -- the add-on in Blender -------------------------------------------------------------------


def test_addon_registers_and_unregisters_cleanly(results: dict[str, Any]) -> None:
    registration = part(results, "registration")
    everything = {
        "operators": ["bake_texture", "cancel", "generate", "project_result", "refresh_models"],
        "scene_property": True,
        "panel": True,
        "preferences": True,
    }
    nothing = {"operators": [], "scene_property": False, "panel": False, "preferences": False}
    assert registration["before"] == nothing
    assert registration["enabled"] == everything
    assert registration["disabled"] == nothing
    assert registration["enabled_again"] == everything
    assert part(results, "unregister") == {
        "operators_left": [],
        "scene_property": False,
        "panel": False,
        "running": False,
        "timer": False,
    }


def test_generate_sends_one_request_and_streams_previews(results: dict[str, Any]) -> None:
    generate = part(results, "generate")
    assert generate["error"] is None
    assert generate["outcome"][0] == "INFO", generate["outcome"]
    assert generate["requests"] == 1
    assert generate["prompt"] == "weathered stone, moss"
    assert generate["options"] == {
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": 4,
        "width": WIDTH,
        "height": HEIGHT,
        "model": None,
        "loras": [],
        "preview": "fast",
        "tiling": None,
    }
    depth, normal, canny = generate["controls"]
    assert (depth["model"], normal["model"], canny["model"]) == ("depth", "normal", "canny")
    assert [depth["weight"], depth["start"], depth["end"]] == pytest.approx([0.8, 0.1, 0.9])
    for unit in (depth, normal):
        # Float maps go out as raw float buffers: no 8-bit rounding on the way.
        assert unit["dtype"] == "float32"
        assert unit["shape"] == [HEIGHT, WIDTH, 3]
        assert unit["preprocessor"] == "None"  # converted here, with tether.maps
    # Canny: the colour render as it is, edges found on the server with these thresholds.
    assert [canny["weight"], canny["start"], canny["end"]] == pytest.approx([0.6, 0.0, 0.5])
    assert canny["preprocessor"] == "Canny(low=80, high=160)"
    assert (canny["dtype"], canny["shape"]) == ("uint8", [HEIGHT, WIDTH, 3])
    assert generate["previews"] == 4  # one per step
    assert generate["seed"] == 1234
    assert generate["image_size"] == [WIDTH, HEIGHT]
    assert generate["image_pixels_nonblank"]
    # The passes were rendered from a copy of the scene, which is gone again.
    assert generate["render_settings_unchanged"]
    assert generate["view_layers_unchanged"]
    assert generate["scenes_after"] == ["Scene"]
    assert "Tether Result" in generate["images_added"]
    assert set(generate["images_added"]) <= {"Tether Result", "Render Result"}


def test_panel_and_preferences_draw(results: dict[str, Any]) -> None:
    panel = part(results, "panel")
    idle = panel["after_generate"]
    assert idle["problems"] == []
    assert {
        "prompt",
        "negative_prompt",
        "model",
        "steps",
        "seed",
        "use_random_seed",
        "enabled",
        "weight",
        "start",
        "end",
        "low",
        "high",
        "project_onto_selected",
        "tiling",
        "material_normal_map",
        "material_size",
    } <= set(idle["props"])
    assert idle["operators"] == [
        "tether.refresh_models",
        "tether.add_lora",
        "tether.generate",
        "tether.bake_texture",
        "tether.tileable_material",
        "tether.project_result",
    ]
    assert f"Size: {WIDTH} x {HEIGHT} (render resolution)" in idle["labels"]
    assert any(label.startswith("done, seed 1234") for label in idle["labels"])
    running = part(results, "cancel")["panel_while_running"]
    assert running["problems"] == []
    assert "tether.cancel" in running["operators"] and "tether.generate" not in running["operators"]
    assert any(label.startswith("Step ") for label in running["labels"])
    preferences = panel["preferences"]
    assert preferences["problems"] == []
    assert preferences["props"] == ["address", "token", "use_tls", "tls_root_certificate"]


def test_exr_reader_reads_multi_part_and_single_part_files(results: dict[str, Any]) -> None:
    layouts = part(results, "exr_layouts")
    assert {
        "ViewLayer.Depth.Z",
        "ViewLayer.Normal.X",
        "ViewLayer.Normal.Y",
        "ViewLayer.Normal.Z",
    } <= set(layouts["channels"])
    assert layouts["same_channels"]
    assert layouts["max_diff"] == 0.0
    assert layouts["shape"] == [HEIGHT, WIDTH]


def test_maps_sent_equal_tether_maps_of_blenders_passes(results: dict[str, Any]) -> None:
    maps = part(results, "maps")
    assert maps["models"] == ["canny", "depth", "normal"]
    assert not maps["own_render_has_colour"]  # only what was asked for is rendered
    assert maps["exact_depth_max_diff"] <= 1e-6
    assert maps["exact_normal_max_diff"] <= 1e-6


def test_maps_match_ray_cast_geometry(results: dict[str, Any]) -> None:
    """Depth and normals found by ray casting through every pixel centre, converted with
    tether.maps, against what was sent; silhouette pixels excluded, where a sample a
    fraction of a pixel off the centre can hit something else."""
    maps = part(results, "maps")
    pixels = maps["pixels"]
    assert pixels["sphere"] > 300 and pixels["cube"] > 100 and pixels["empty"] > 1000
    assert pixels["silhouette"] < 0.2 * WIDTH * HEIGHT
    assert maps["raycast_depth_max_diff"] < 0.01
    # Blender's smooth normals interpolate vertex normals; the reference is the exact sphere.
    assert maps["raycast_normal_sphere_max_diff"] < 0.03
    assert maps["raycast_normal_cube_max_diff"] < 1e-3
    assert maps["background_depth_max"] == 0.0
    assert maps["background_normal_max_diff"] == 0.0


def test_normal_map_follows_normalbae_convention(results: dict[str, Any]) -> None:
    maps = part(results, "maps")
    # The camera looks at the sphere's centre (rolled 25 degrees): there the surface faces
    # the camera, whatever the world axes.
    assert maps["sphere_centre_normal"] == pytest.approx([0.5, 0.5, 1.0], abs=0.01)
    red, green, _ = maps["sphere_right_of_centre"]
    assert red < 0.4 and green == pytest.approx(0.5, abs=0.05)  # facing right: R = (1-nx)/2
    red, green, _ = maps["sphere_above_centre"]
    assert green > 0.6 and red == pytest.approx(0.5, abs=0.05)  # facing up: G = (1+ny)/2


def test_depth_map_is_near_white_far_black(results: dict[str, Any]) -> None:
    maps = part(results, "maps")
    assert maps["depth_at_nearest"] == 1.0
    assert maps["depth_at_farthest"] == 0.0


def test_canny_unit_sends_the_colour_render(results: dict[str, Any]) -> None:
    canny = part(results, "canny")
    assert (canny["picture_dtype"], canny["picture_shape"]) == ("uint8", [HEIGHT, WIDTH, 3])
    assert canny["picture_vs_own_render_max_diff"] == 0
    assert not canny["own_render_has_data_passes"]


def test_canny_map_has_edges_at_silhouettes_and_none_in_flat_areas(
    results: dict[str, Any],
) -> None:
    """The map the server makes of the canny unit (Preprocess, the code Generate runs),
    against the geometry found by ray casting through each pixel centre."""
    canny = part(results, "canny")
    assert canny["map_shape"] == [HEIGHT, WIDTH, 3]
    assert canny["map_values"] == [0, 255] and canny["map_channels_equal"]
    assert canny["flat_pixels"] > 0.6 * WIDTH * HEIGHT
    assert canny["edges_in_flat_areas"] == 0
    # Along where the sphere and the cube meet the background, an edge within one pixel.
    assert canny["silhouette_coverage"]["sphere"] >= 0.95
    assert canny["silhouette_coverage"]["cube"] >= 0.95
    assert canny["edge_pixels"] < 0.15 * WIDTH * HEIGHT


def test_result_is_projected_onto_the_selected_object(results: dict[str, Any]) -> None:
    projection = part(results, "projection")
    assert projection["cube_material"] == projection["cube_slots"][0]
    assert projection["texture_images"] == [projection["expected_image"]]
    assert projection["uv_node_map"] == ["Tether Projection"]
    assert projection["uv_feeds_texture"]
    assert projection["uv_layer"]
    # The UVs equal Blender's own world_to_camera_view of each vertex.
    assert projection["uv_max_diff"] < 1e-5
    # Not selected: untouched.
    assert projection["sphere_materials"] == []
    assert projection["sphere_uv_layers"] == ["UVMap"]


def test_result_is_packed_or_saved_next_to_the_blend(results: dict[str, Any]) -> None:
    assert part(results, "generate")["image_packed"]  # the .blend was never saved
    saved = part(results, "saved")
    assert saved["error"] is None
    assert saved["file_next_to_blend"], saved
    assert saved["image_filepath"].startswith("//")  # relative: moves with the project
    assert saved["png_size"] == [WIDTH, HEIGHT]
    assert not saved["packed"]


def test_canny_unit_alone_renders_only_the_colour_picture(results: dict[str, Any]) -> None:
    saved = part(results, "saved")
    assert saved["error"] is None
    assert saved["controls"] == [["canny", "uint8", [HEIGHT, WIDTH, 3]]]
    assert saved["renders"] == [{"data": False, "colour": True, "camera": "Camera"}]


def test_cancel_stops_the_job_on_the_server(results: dict[str, Any]) -> None:
    cancel = part(results, "cancel")
    assert cancel["generate_result"] == ["FINISHED"]  # returned at once, job in background
    assert cancel["timer_registered"]
    assert cancel["cancel_result"] == ["FINISHED"]
    assert cancel["cancelled"] and cancel["error"] is None
    assert cancel["step"] < cancel["total"] == 150
    assert cancel["outcome"][0] == "WARNING"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_camera", "no active camera"),
        ("unreachable", "Cannot reach the Tether server"),
        ("bad_token", "refused the token"),
        ("size_not_multiple_of_8", "multiples of 8"),
        ("start_after_end", "Start (0.70) must be before End (0.30)"),
        ("canny_low_above_high", "Canny unit: Low (210) must not be above High (200)"),
        ("canny_flat_colour_render", "the colour render is one flat colour"),
        ("nothing_selected", "no mesh is selected"),
        ("unknown_model", "no model 'no-such-model'"),
        ("unknown_control_model", "no 'no-such-depth' for the depth unit"),
        ("offline_remote_address", "Online access is disabled"),
    ],
)
def test_fault_is_reported_and_leaves_the_scene_unchanged(
    results: dict[str, Any], case: str, message: str
) -> None:
    outcome = part(results, "faults")["cases"][case]
    assert outcome["error"] is not None and message in outcome["error"], outcome["error"]
    assert "Traceback" not in outcome["error"]
    assert outcome["unchanged"], f"changed: {outcome['changed']}"


def test_right_token_is_accepted(results: dict[str, Any]) -> None:
    assert part(results, "faults")["right_token_refresh"] == ["FINISHED"]


def test_online_access_rules(results: dict[str, Any]) -> None:
    rules = part(results, "connection_rules")
    # bpy runs with online access off, as Blender does until the user allows it; the
    # offline fault case above relies on that (it must never try a remote address).
    assert rules["online_access"] is False
    assert rules["loopback"] == {
        "127.0.0.1:50051": True,
        "localhost:1": True,
        "[::1]:50051": True,
        "127.8.9.10:5": True,
        "192.0.2.7:50051": False,
        "gpu.example:50051": False,
        "[2001:db8::1]:443": False,
    }
    assert "Online access is disabled" in rules["remote_offline"]
    assert rules["remote_online"] is None
    assert "server address" in rules["empty_address"]


# -- the packaged extension ------------------------------------------------------------------


def test_extension_zips_are_valid_for_each_platform(
    built_zips: dict[str, Path], blender_python: Path
) -> None:
    assert sorted(built_zips) == sorted(PLATFORM_WHEEL_TAGS)
    (validator,) = VENV.glob(
        "lib/python3.*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"
    )
    for platform, path in built_zips.items():
        # Blender's own validator, the code `blender --command extension validate` runs.
        completed = subprocess.run(
            [str(blender_python), str(validator), "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        with zipfile.ZipFile(path) as archive:
            manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
            names = archive.namelist()
            sdk_wheel = next(n for n in names if n.startswith("wheels/tether-"))
            with archive.open(sdk_wheel) as handle, zipfile.ZipFile(handle) as wheel:
                sdk_files = set(wheel.namelist())
        assert manifest["platforms"] == [platform]
        assert manifest["permissions"]["network"]
        wheels = sorted(n for n in names if n.startswith("wheels/"))
        assert sorted(w.removeprefix("./") for w in manifest["wheels"]) == wheels
        assert "__init__.py" in names and not any("__pycache__" in n for n in names)
        by_name = {w.split("/")[1].split("-")[0]: w for w in wheels}
        assert {"tether", "grpcio", "protobuf"} <= set(by_name)
        assert "numpy" not in by_name  # Blender brings its own
        system, machines = PLATFORM_WHEEL_TAGS[platform]
        grpc_tag = by_name["grpcio"].removesuffix(".whl").split("-")[-1]
        assert "cp311" in by_name["grpcio"]
        assert system in grpc_tag and any(m in grpc_tag for m in machines), grpc_tag
        assert {"tether/__init__.py", "tether/background.py", "tether/maps.py"} <= sdk_files
        assert any(f.startswith("tether/_proto/tether/v1/") for f in sdk_files)


def test_extension_installs_and_generates_in_blender(
    built_zips: dict[str, Path],
    blender_python: Path,
    server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Installed like a user installs it, with the SDK and grpc only from its wheels."""
    folder = tmp_path_factory.mktemp("blender-install")
    installed = run_in_blender(
        blender_python,
        INSTALL_CHECK,
        ["--zip", str(built_zips["linux-x64"]), "--server", server],
        folder,
        [],
    )
    assert "crashed" not in installed, installed.get("crashed")
    assert installed == {
        "install": ["FINISHED"],
        "enabled": True,
        "tether_from_wheel": True,
        "grpc_from_wheel": True,
        "has_numpy_wheel": False,
        "generate": ["FINISHED"],
        "disabled_clean": True,
        "uninstall": ["FINISHED"],
        "folder_removed": True,
    }


def test_example_script_textures_a_blockout(
    blender_python: Path, server: str, tmp_path: Path
) -> None:
    blend = tmp_path / "scene.blend"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender-user")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "sdk"), str(ROOT / "clients" / "blender")])
    completed = subprocess.run(
        [
            str(blender_python),
            str(EXAMPLE),
            "--server",
            server,
            "--steps",
            "2",
            "--out",
            str(blend),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert blend.is_file()
    textures = list(tmp_path.glob("scene_tether_*.png"))
    assert len(textures) == 1, sorted(p.name for p in tmp_path.iterdir())
