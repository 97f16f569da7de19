"""The Krita plugin in real Krita (Debian's 5.1.5, headless through `kritarunner`)
against a real Tether server on the tiny model.

One Krita run executes every case of tests/krita/repaint_scenario.py and records what
happened; the tests below check the record. The plugin is assembled the way build.py
ships it (package + SDK + vendored grpcio/protobuf/numpy for linux-x86_64-cp311), so the
run also proves the vendored libraries load in Krita's own Python.

Needs `kritarunner` and the vendored wheels: the fixture runs
clients/krita/setup_test_env.sh (idempotent; `make hosts` runs it too), which installs
Krita from Debian's packages when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "tests" / "krita"
SETUP = ROOT / "clients" / "krita" / "setup_test_env.sh"
KEY = "linux-x86_64-cp311"  # Debian 12's Krita runs the system Python 3.11
SIZE = (192, 144)
KRITA_TIMEOUT_S = 240
sys.path.insert(0, str(SCENARIO_DIR))

from plugin_build import load_build  # noqa: E402

CASES = [
    {"name": "no-document", "kind": "no-document"},
    {"name": "empty-selection", "kind": "repaint", "selection": "empty"},
    {"name": "server-down", "kind": "repaint", "address": "127.0.0.1:1"},
    {"name": "docker", "kind": "docker", "prompt": "a fox"},
    {"name": "fallback", "kind": "fallback", "problem": "The Tether plugin cannot load numpy"},
    {"name": "rgba8", "kind": "repaint", "prompt": "a red apple"},
    {"name": "float16", "kind": "repaint", "depth": "F16", "prompt": "a red apple"},
    {"name": "edges", "kind": "repaint", "show_edges": True, "prompt": "a red apple"},
    {"name": "cancel", "kind": "cancel", "steps": 40},
    # Past the server's step limit: refused by Generate.
    {"name": "rejected", "kind": "repaint", "steps": 100000},
]


@pytest.fixture(scope="module")
def krita_run(server, tmp_path_factory):
    """Run every case in one Krita process; returns (report, output folder, vendor folder)."""
    setup = subprocess.run(
        ["bash", str(SETUP)],
        env={**os.environ, "PYTHON": sys.executable},  # build.py runs on the tests' Python
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert setup.returncode == 0, f"{SETUP.name} failed:\n{setup.stdout}{setup.stderr}"[-3000:]
    build = load_build()
    _, requirements = build.project()
    vendor = build.vendor_target(build.TARGETS[KEY], build.DEFAULT_CACHE, requirements)
    base = tmp_path_factory.mktemp("krita")
    plugin_tree = build.assemble(base / "plugin", {KEY: vendor}, link=True)
    out = base / "out"
    out.mkdir()
    config = {"out": str(out), "address": server, "cases": CASES}
    (base / "scenario.json").write_text(json.dumps(config))
    home = base / "home"  # Krita writes its settings and resource cache here, not in ~
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_tree), str(SCENARIO_DIR)]),
        "QT_QPA_PLATFORM": "offscreen",
        "TETHER_KRITA_SCENARIO": str(base / "scenario.json"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
    }
    (home / "runtime").mkdir(parents=True)
    (home / "runtime").chmod(0o700)
    process = subprocess.run(
        ["kritarunner", "-s", "repaint_scenario"],
        env=env,
        capture_output=True,
        text=True,
        timeout=KRITA_TIMEOUT_S,
    )
    report_path = out / "report.json"
    assert report_path.is_file(), f"Krita wrote no report:\n{process.stdout[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report["error"]
    return report, out, vendor


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
