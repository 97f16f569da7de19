"""Bake Texture of the Blender add-on in real Blender, against a real server on the tiny
model: the generated pictures baked into a texture on the mesh's UV map, from one view,
two cameras and an orbit, checked against what each camera sees of every texel found
independently with Blender's ray casts (tests/blender/bake_checks.py measures, this file
holds the expectations). The geometry itself is tested on analytic cases in
tests/test_blender_uv_geometry.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_blender import EXAMPLE, ROOT, blender_python, part, run_in_blender  # noqa: F401

CHECKS = ROOT / "tests" / "blender" / "bake_checks.py"
WIDTH, HEIGHT = 64, 48  # as in tests/blender/bake_scene.py
TEXTURE = 128
MARKED = 1.0  # share of texels left marked: all of them


@pytest.fixture(scope="module")
def results(
    blender_python: Path,  # noqa: F811
    server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("blender-bake")
    return run_in_blender(
        blender_python,
        CHECKS,
        ["--server", server],
        folder,
        [ROOT / "sdk", ROOT / "clients" / "blender"],
        timeout=900,  # ten generations and a dozen renders; slow when the cores are shared
    )


def test_texels_a_view_sees_take_its_colours_and_the_rest_stay_marked(
    results: dict[str, Any],
) -> None:
    one = part(results, "one_view")
    assert one["error"] is None and one["outcome"][0] == "INFO", one["outcome"]
    assert [r["init_image"] for r in one["requests"]] == [None]  # one plain request
    assert one["texels"] == 6 * 32 * 32 + 6 * 4 * 4  # the cube's cross and the bump's
    assert one["clearly_seen"] > 1500
    # Seen: the picture's colour where the camera sees the texel (bilinear between the
    # four pixel centres around it), up to rounding to 8 bits; opaque; not in the mask.
    assert one["seen_colour_max_diff"] <= 0.5 + 1e-3
    assert one["seen_painted"] == 1.0 and one["seen_not_in_mask"] == 1.0
    # Unseen (back faces, outside the picture, hidden): magenta, alpha 0, white in the
    # missing mask. Hidden by the mesh itself (its bump) and by another object.
    assert one["hidden_by_itself"] > 50 and one["hidden_by_other"] > 100
    assert one["unseen_marked"] == MARKED
    assert one["hidden_by_itself_marked"] == MARKED
    assert one["hidden_by_other_marked"] == MARKED
    assert 0.3 < one["painted_share"] < 0.5  # three faces of six, less what is hidden
    assert one["outcome"][1].startswith("Tether: baked 1 of 1 views, seeds from 7")


def test_the_texture_is_a_material_on_the_mesh_through_its_uv_map(
    results: dict[str, Any],
) -> None:
    one = part(results, "one_view")
    assert one["material_images"] == [one["texture_name"]] == ["Cube Tether Texture"]
    assert one["material_uv_maps"] == ["UVMap"]  # the mesh's own (active) UV map
    assert one["texture_size"] == [TEXTURE, TEXTURE]
    assert one["packed"] == [True, True]  # texture and mask; the .blend was never saved
    assert one["mask_colourspace"] == "Non-Color"


def test_a_second_camera_is_conditioned_on_the_first_and_covers_more(
    results: dict[str, Any],
) -> None:
    one, two = part(results, "one_view"), part(results, "two_views")
    assert two["error"] is None and two["baked"] == ["A", "B"]  # the scene's camera first
    first, second = two["requests"]
    assert first["init_image"] is None and first["seed"] == 7
    assert second["seed"] == 8
    assert second["init_image"] == ["uint8", [HEIGHT, WIDTH, 3]]
    assert second["mask"] == ["uint8", [HEIGHT, WIDTH], [0, 255]]
    assert (second["strength"], second["mask_blur"]) == (1.0, 4)
    assert two["painted_texels"] > 1.5 * one["painted_texels"]
    assert two["painted_share"] > one["painted_share"] + 0.25
    # Seen by one camera only: that camera's colours; by neither: marked.
    assert two["only_a"] > 500 and two["only_b"] > 500 and two["neither"] > 500
    assert two["only_a_colour_max_diff"] <= 0.5 + 1e-3
    assert two["only_b_colour_max_diff"] <= 0.5 + 1e-3
    assert two["neither_marked"] == MARKED


def test_the_second_request_keeps_what_the_first_view_painted(results: dict[str, Any]) -> None:
    """The mask and init image against B's own ray casts into the one-view texture."""
    conditioning = part(results, "two_views")["conditioning"]
    assert conditioning["kept_pixels"] > 100
    assert conditioning["kept_show_painted"] == 1.0  # kept = shows texels view A painted
    assert conditioning["painted_kept"] == 1.0
    assert conditioning["unpainted_cube_repainted"] == 1.0
    assert conditioning["not_cube_repainted"] == 1.0  # background: painted freely
    # The init image shows the first texture there (nearest texel vs bilinear: close).
    assert conditioning["init_vs_texture"] < 0.2 * conditioning["init_vs_shuffled"]
    # And the blend keeps it: texels both cameras see stay near the first view's colours.
    two = part(results, "two_views")
    assert two["both"] > 200
    assert two["both_vs_one_view"] < 0.5 * two["both_vs_shuffled"]


def test_orbit_places_cameras_around_the_mesh_and_paints_all_but_the_bottom(
    results: dict[str, Any],
) -> None:
    orbit = part(results, "orbit")
    assert orbit["error"] is None
    assert orbit["cameras"] == [f"Tether Orbit {k}" for k in range(1, 5)]
    assert orbit["camera_elevations"] == pytest.approx([30] * 4, abs=1)
    assert orbit["axis_misses_centre_max"] < 0.3  # each looks at the mesh's centre
    requests = orbit["requests"]
    assert [r["seed"] for r in requests] == [7, 8, 9, 10]
    assert requests[0]["init_image"] is None
    assert all(r["init_image"] == ["uint8", [HEIGHT, WIDTH, 3]] for r in requests[1:])
    assert orbit["painted_share"] > 0.75 > orbit["one_view_share"]
    assert orbit["bottom_texels"] == 32 * 32 + 4 * 4 and orbit["bottom_marked"] == MARKED


def test_cancel_stops_between_views_and_keeps_what_was_baked(results: dict[str, Any]) -> None:
    cancel = part(results, "cancel")
    assert cancel["bake_result"] == ["FINISHED"]  # returned at once, job in the background
    assert cancel["cancel_result"] == ["FINISHED"]
    assert any(label.startswith("View ") for label in cancel["labels_while_running"])
    assert cancel["cancelled"] and cancel["error"] is None
    # The second view was never sent, or stopped on the server before it finished.
    assert cancel["requests"] in (1, 2) and cancel["later_finished"] in ([], [False])
    assert cancel["baked"] == ["A"]
    assert cancel["painted_share"] == cancel["one_view_share"]
    assert cancel["packed"]
    level, message = cancel["outcome"]
    assert level == "WARNING" and message.startswith("Tether: bake cancelled after 1 of 2 views")


def test_panel_offers_the_views_and_texture_options(results: dict[str, Any]) -> None:
    panel = part(results, "panel")
    for drawn in panel.values():
        assert drawn["problems"] == []
        assert drawn["operators"] == [
            "tether.refresh_models",
            "tether.add_lora",
            "tether.generate",
            "tether.bake_texture",
            "tether.tileable_material",
        ]
        assert {"views", "texture_size", "texture_margin", "max_angle"} <= set(drawn["props"])
    assert {"orbit_count", "orbit_elevation"} <= set(panel["orbit"]["props"])
    assert not {"orbit_count", "orbit_elevation"} & set(panel["active"]["props"])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_mesh_selected", "no mesh is selected"),
        ("no_uv_map", "'Flat' has no UV map to bake on"),
        ("no_camera_selected", "no camera is selected"),
        ("no_active_camera", "no active camera"),
        ("orbit_unreachable", "Cannot reach the Tether server"),
    ],
)
def test_bake_faults_are_reported_and_leave_the_scene_unchanged(
    results: dict[str, Any], case: str, message: str
) -> None:
    outcome = part(results, "faults")["cases"][case]
    assert outcome["error"] is not None and message in outcome["error"], outcome["error"]
    assert outcome["unchanged"], f"changed: {outcome['changed']}"
    assert outcome["orbit_cameras_added"] == 0


@pytest.mark.parametrize("way", ["packed_round_trip", "saved_round_trip"])
def test_the_baked_texture_round_trips_through_a_saved_blend(
    results: dict[str, Any], way: str
) -> None:
    trip = part(results, way)
    assert trip["error"] is None
    assert trip["same_image"] and trip["size"] == [TEXTURE, TEXTURE]
    assert trip["max_diff"] == 0.0  # every texel, alpha included
    assert trip["has_missing_texels"]
    assert trip["uv_maps"] == ["UVMap"]
    if way == "packed_round_trip":  # baked before the file was ever saved
        assert trip["packed"] and trip["filepath"] == ""
    else:  # baked in a saved file: a PNG next to it, referenced relatively
        assert not trip["packed"] and trip["file_next_to_blend"]
        assert trip["filepath"] == "//scene_tether_Cube_texture.png"


def test_example_script_bakes_the_crates_from_an_orbit(
    blender_python: Path,  # noqa: F811
    server: str,
    tmp_path: Path,
) -> None:
    blend = tmp_path / "scene.blend"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender-user")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "sdk"), str(ROOT / "clients" / "blender")])
    arguments = ["--bake", "orbit", "--orbit", "2", "--texture-size", "128", "--steps", "1"]
    completed = subprocess.run(
        [str(blender_python), str(EXAMPLE), "--server", server, "--no-canny", *arguments]
        + ["--out", str(blend)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "baked 2 of 2 views" in completed.stdout
    written = sorted(p.name for p in tmp_path.glob("scene_tether_*.png"))
    assert written == [
        f"scene_tether_Crate_{crate}_{kind}.png"
        for crate in "AB"
        for kind in ("missing", "texture")
    ]
