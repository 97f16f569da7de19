"""The Blender add-on's model and LoRA choice, Generate's tiling and Tileable Material in
real Blender, against a real server with two base models ("stone", "brick": the tiny model
with two seeds), two LoRAs and a normal ControlNet, named in a models file as a user's
(tests/blender/material_checks.py measures, this file holds the expectations).

The README's picture: ``python tests/blender/material_checks.py --server ADDRESS --out
x.json --picture docs/blender_tileable.png`` (.venv-blender, PYTHONPATH=sdk:clients/blender)
against a server started with the models file this test writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import model_files
import pytest
from conftest import Server
from lora_files import random_lora, save_diffusers
from test_blender import ROOT, blender_python, part, run_in_blender  # noqa: F401
from tether_server import models

CHECKS = ROOT / "tests" / "blender" / "material_checks.py"
SIZE = 128  # as in tests/blender/material_checks.py


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("blender-catalog")
    stone, brick = models.tiny(seed=0), models.tiny(seed=1)
    model_files.diffusers_folder(stone, folder / "stone")
    model_files.diffusers_folder(brick, folder / "brick")
    model_files.control_file(stone, "normal", folder / "control_v11p_sd15_normalbae.safetensors")
    model_files.control_config(stone, folder / "control-configs")
    for name, seed in (("detail", 1), ("style", 2)):
        save_diffusers(random_lora(stone, seed), folder / f"{name}.safetensors")
    toml = folder / "models.toml"
    toml.write_text(
        '[models.stone]\npath = "stone"\n'
        '[models.brick]\npath = "brick"\n'
        '[controls.normal]\npath = "control_v11p_sd15_normalbae.safetensors"\n'
        'config = "control-configs"\n'
        '[loras.detail]\npath = "detail.safetensors"\n'
        '[loras.style]\npath = "style.safetensors"\n'
    )
    running = Server("--models", str(toml), "--max-loaded", "2").wait_serving()
    yield running.address
    running.stop()


@pytest.fixture(scope="module")
def results(
    blender_python: Path,  # noqa: F811
    server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("blender-material")
    return run_in_blender(
        blender_python,
        CHECKS,
        ["--server", server],
        folder,
        [ROOT / "sdk", ROOT / "clients" / "blender", ROOT / "tests" / "blender"],
    )


def test_refresh_lists_the_servers_models_and_loras_for_the_search_fields(
    results: dict[str, Any],
) -> None:
    catalog = part(results, "catalog")
    assert catalog["refresh"] == ["FINISHED"]
    assert catalog["models"] == ["stone", "brick"]  # the first is the default
    assert catalog["loras"] == ["detail", "style"]
    assert catalog["model_search_r"] == ["brick"]  # case-insensitive
    assert catalog["lora_search_sty"] == ["style"]


def test_generate_sends_the_chosen_model_and_loras(results: dict[str, Any]) -> None:
    loras = part(results, "loras")
    assert loras["error"] is None and loras["requests"] == 1
    options = loras["options"]
    assert options["model"] == "brick"
    assert options["loras"] == [["detail", 0.5], ["style", 1.0]]  # the disabled row left out
    assert options["tiling"] is None
    # The picture is the server's answer to exactly that: the LoRAs and the model matter.
    assert loras["same_request_same_picture"]
    assert loras["without_loras_max_diff"] > 10
    assert loras["other_model_max_diff"] > 10
    # The panel draws a row per LoRA, each with its remove button, then Add LoRA.
    panel = loras["panel"]
    assert panel["problems"] == []
    assert panel["operators"][:5] == ["tether.refresh_models"] + ["tether.remove_lora"] * 3 + [
        "tether.add_lora"
    ]
    assert panel["props"].count("lora") == 3


def test_generate_sends_the_tiling(results: dict[str, Any]) -> None:
    tiling = part(results, "tiling")
    assert tiling["error"] is None
    assert (tiling["options"]["tiling"], tiling["options"]["loras"]) == ("x", [])
    assert tiling["same_request_same_picture"]
    assert tiling["untiled_max_diff"] > 10


def test_bad_loras_are_refused_before_anything_is_sent(results: dict[str, Any]) -> None:
    faults = part(results, "lora_faults")
    assert "the server has no LoRA 'no-such-lora'; it has: detail, style" in faults["unknown_lora"]
    assert "'detail' is chosen twice" in faults["lora_twice"]
    assert faults["good_after"] is None


def test_tileable_material_faults_name_the_fix(results: dict[str, Any]) -> None:
    faults = part(results, "material_faults")
    assert "choose a Normal Map image" in faults["no_normal_map"]
    assert "is 8x8; it must be 128x128" in faults["start_image_size"]
    assert "make the mesh to texture the active object" in faults["not_a_mesh"]


def test_tileable_material_sends_the_normal_map_with_tiling_xy(results: dict[str, Any]) -> None:
    material = part(results, "material")
    assert material["error"] is None and material["outcome"][0] == "INFO", material["outcome"]
    options = material["options"]
    assert options["tiling"] == "xy"
    assert (options["width"], options["height"]) == (SIZE, SIZE)
    assert options["strength"] == pytest.approx(0.5)
    assert material["init_image"] == [SIZE, SIZE, 3]
    assert material["control"] == ["normal", pytest.approx(0.8), "resize", [SIZE, SIZE, 3]]
    # The object's own normal map (OpenGL tangent space), found through its material and
    # encoded for normalbae: the analytic normals' map, up to the image's 8 bits.
    assert material["map_vs_expected_max_diff"] < 0.01
    assert material["red_where_facing_right"] < 0.35  # R = (1 - nx) / 2
    assert material["green_where_facing_up"] > 0.65  # G = (1 + ny) / 2


def test_the_albedo_is_assigned_with_the_normal_map_and_repeats(results: dict[str, Any]) -> None:
    material = part(results, "material")
    assert material["albedo_name"] == "Floor Tether Albedo"
    assert material["albedo_size"] == [SIZE, SIZE]
    assert material["albedo_packed"]  # the .blend was never saved
    assert material["albedo_is_the_result"]
    assert material["slots"] == [material["material"]] == ["Floor Tether Albedo"]
    assert material["colour_image"] == ["Floor Tether Albedo", "REPEAT"]
    assert material["normal_node"] == ["ShaderNodeNormalMap", "TANGENT", "UVMap"]
    assert material["normal_image"] == ["Stone Normal", "Non-Color"]
    assert material["mapping_scale"] == [2.0, 2.0, 1.0]


def test_the_albedo_is_seamless_and_the_untiled_request_is_not(results: dict[str, Any]) -> None:
    """The step across the wrap edge (last column to first, last row to first) against the
    image's own neighbouring-pixel steps (their 95th percentile). Without tiling the left
    and right edges (each padded with zeros) meet with a step well beyond them; the tiny
    model's rows happen to show no such step, as in tests/test_seamless.py."""
    material = part(results, "material")
    for axis in ("x", "y"):
        step, typical = material["tiled"][axis]
        assert step <= typical, f"a seam along {axis}: {step:.4f} > {typical:.4f}"
    step, typical = material["untiled"]["x"]
    assert step > 1.3 * typical


def test_a_directx_normal_map_is_read_green_down_and_flipped_in_the_material(
    results: dict[str, Any],
) -> None:
    directx = part(results, "directx")
    assert directx["error"] is None and not directx["init_image"]
    # The same normals stored green-down give the same control map.
    assert directx["map_vs_expected_max_diff"] < 0.01
    assert directx["green_path"] == ["ShaderNodeCombineColor", "ShaderNodeMath", "SUBTRACT", 1.0]
    assert directx["flip_reads_green"] == "Green"
