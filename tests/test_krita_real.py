"""The Krita plugin's repaints in real Krita (Debian's 5.1.5, headless through
`kritarunner`) against a real Tether server on the tiny model.

One Krita run (tests/krita/krita_runner.py) executes every case of
tests/krita/repaint_scenario.py and records what happened; the tests below check the
record. Live mode: tests/test_krita_live_real.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from catalog import LORA, write_catalog  # noqa: E402
from conftest import Server  # noqa: E402
from krita_runner import KEY, krita_home, prepare_plugin, run_scenario  # noqa: E402

SIZE = (192, 144)

CASES = [
    {"name": "no-document", "kind": "no-document"},
    {"name": "empty-selection", "kind": "repaint", "selection": "empty"},
    {"name": "server-down", "kind": "repaint", "address": "127.0.0.1:1"},
    {"name": "docker", "kind": "docker", "prompt": "a fox"},
    {"name": "pickers", "kind": "pickers", "catalog": True},
    {"name": "fallback", "kind": "fallback", "problem": "The Tether plugin cannot load numpy"},
    {"name": "rgba8", "kind": "repaint", "prompt": "a red apple"},
    {"name": "float16", "kind": "repaint", "depth": "F16", "prompt": "a red apple"},
    {"name": "edges", "kind": "repaint", "show_edges": True, "prompt": "a red apple"},
    {"name": "cancel", "kind": "cancel", "steps": 40},
    # A region over the catalog server's one-pass limit (4096 pixels), with its LoRA.
    {
        "name": "large",
        "kind": "repaint",
        "catalog": True,
        "selection": "rect",
        "loras": [[LORA, 0.8]],
    },
    # Past the server's step limit: refused by Generate.
    {"name": "rejected", "kind": "repaint", "steps": 100000},
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """`tether serve --models` with a LoRA and a one-pass limit of 4096 pixels (64²), which
    a 160 x 120 selection's region exceeds. Started here, awaited by `krita_run`."""
    models_file = write_catalog(tmp_path_factory.mktemp("catalog"))
    running = Server("--models", str(models_file), "--max-pixels", "4096")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def krita_run(server, catalog, tmp_path_factory):
    """Run every case in one Krita process; returns (report, output folder, vendor folder)."""
    base = tmp_path_factory.mktemp("krita")
    plugin_tree, vendor = prepare_plugin(base)
    out = base / "out"
    catalog_address = catalog.wait_serving().address
    config = {"out": str(out), "address": server, "catalog": catalog_address, "cases": CASES}
    home = krita_home(tmp_path_factory)
    return run_scenario("repaint_scenario", config, base, plugin_tree, home), out, vendor


def case(krita_run, name: str) -> dict:
    return krita_run[0]["cases"][name]


def pixels_of(out: Path, name: str, part: str, dtype: str = "<u1", channels: int = 4):
    width, height = SIZE
    data = np.frombuffer((out / f"{name}-{part}.raw").read_bytes(), dtype=dtype)
    return data.reshape(height, width, channels) if channels > 1 else data.reshape(height, width)


def test_vendored_libraries_load_in_kritas_python(krita_run):
    report, _, vendor = krita_run
    assert report["platform_key"] == KEY
    assert report["python"].startswith("3.11")
    assert f"vendor/{KEY}/numpy" in report["numpy"]
    assert "vendor/common/tether" in report["tether"]
    assert "vendor/common/tether/background.py" in report["tether_background"]
    # numpy without its own test suite (about 500 files under numpy/**/tests).
    assert (vendor / "numpy" / "testing").is_dir()
    assert not [path for path in vendor.rglob("tests") if path.is_dir()]


def test_no_document_gets_a_message(krita_run):
    result = case(krita_run, "no-document")
    assert result["started"] is False
    assert result["alerts"] == ["Open an image first: Repaint works on the active document."]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("empty-selection", "The selection is empty"),
        ("server-down", "Cannot reach the Tether server at 127.0.0.1:1"),
        ("rejected", "The Tether server refused the request: steps"),
    ],
)
def test_faults_show_a_message_and_leave_the_document_untouched(krita_run, name, words):
    result = case(krita_run, name)
    [alert] = result["alerts"]
    assert words in alert
    assert result["untouched"] and result["saved"] and result["reopened"]
    assert [layer["name"] for layer in result["layers"]] == ["Background", "Selection Mask"]


def test_docker_round_trips_settings_and_lists_the_servers_models(krita_run):
    result = case(krita_run, "docker")
    assert result["settings_round_trip"] and result["models_arrived"]
    assert result["models"] == ["(server default)", "tiny"]
    assert result["repaint_enabled"]


def test_missing_libraries_show_an_explanation_not_a_traceback(krita_run):
    assert case(krita_run, "fallback")["label"] == "The Tether plugin cannot load numpy"


@pytest.mark.parametrize(("name", "dtype"), [("rgba8", "<u1"), ("float16", "<f2")])
def test_repaint_changes_pixels_only_inside_the_selection(krita_run, name, dtype):
    result = case(krita_run, name)
    out = krita_run[1]
    assert result["last_message"] == "Done: layer “a red apple”, seed 1."
    assert result["alerts"] == [] and result["saved"] and result["reopened"]
    names = [layer["name"] for layer in result["layers"]]
    assert names == ["Background", "a red apple", "Selection Mask"]

    selection = pixels_of(out, name, "selection", channels=1)
    inside, outside = selection == 255, selection == 0
    assert inside.sum() > 3000 and outside.sum() > 3000
    before = pixels_of(out, name, "before", dtype)
    after = pixels_of(out, name, "after", dtype)
    changed = np.any(before != after, axis=2)
    assert not changed[outside].any(), "pixels outside the selection changed"
    assert changed[inside].mean() > 0.9, "the selection was not repainted"
    layer = pixels_of(out, name, "layer1", dtype)
    assert np.all(layer[outside][:, 3] == 0) and np.all(layer[inside][:, 3] > 0)


def test_show_edges_adds_the_edge_map_as_a_screen_layer(krita_run):
    result = case(krita_run, "edges")
    by_name = {layer["name"]: layer for layer in result["layers"]}
    assert by_name["Edges: a red apple"]["blending"] == "screen"
    assert "a red apple" in by_name
    edges = pixels_of(krita_run[1], "edges", "layer1")
    lines = edges[:, :, :3].max(axis=2) > 128
    assert 0 < lines.mean() < 0.5  # the checkerboard's edges, not a blank or white map


def test_cancel_stops_the_job_and_removes_the_preview_layer(krita_run):
    result = case(krita_run, "cancel")
    assert "a red apple (painting…)" in result["layers_during_job"]
    assert result["last_message"] == "Cancelled." and result["alerts"] == []
    assert result["untouched"]
    assert [layer["name"] for layer in result["layers"]] == ["Background", "Selection Mask"]


def test_the_docker_offers_the_servers_models_and_loras_and_remembers_the_choice(krita_run):
    result = case(krita_run, "pickers")
    assert result["models_arrived"] and result["models"] == ["(server default)", "tiny"]
    assert result["loras"] == ["(none)", LORA]
    assert result["status"] == "The server offers 1 model(s) and 1 LoRA(s)."
    assert result["stored_loras"] == [[LORA, 0.7]] and result["stored_tiling"] == "xy"
    assert result["docker_round_trip"]


def test_a_region_over_the_one_pass_limit_is_repainted_at_full_resolution(krita_run):
    result = case(krita_run, "large")
    out = krita_run[1]
    assert result["alerts"] == [] and result["saved"] and result["reopened"]
    assert result["last_message"] == (
        "Done: layer “a red apple”, seed 1. Sent at full resolution, 192×144, refined in tiles."
    )
    selection = pixels_of(out, "large", "selection", channels=1)
    inside, outside = selection == 255, selection == 0
    assert inside.sum() == 160 * 120
    before, after = pixels_of(out, "large", "before"), pixels_of(out, "large", "after")
    changed = np.any(before != after, axis=2)
    assert not changed[outside].any() and changed[inside].mean() > 0.9
    layer = pixels_of(out, "large", "layer1")
    assert np.all(layer[outside][:, 3] == 0) and np.all(layer[inside][:, 3] == 255)
    # Detail at the canvas's own pixels: neighbours differ about as much as pixels 3 apart
    # (0.67 measured). The same region squeezed into one 64 x 48 pass and scaled back is
    # smooth at the pixel scale: about 0.38.
    rgb = layer[12:132, 16:176, :3].astype(np.float32)
    next_door = np.abs(rgb[:, 1:] - rgb[:, :-1]).mean()
    three_apart = np.abs(rgb[:, 3:] - rgb[:, :-3]).mean()
    assert next_door / three_apart > 0.55
