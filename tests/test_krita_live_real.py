"""Live mode in real Krita (Debian's 5.1.5 through `kritarunner`, in a window on a
virtual X display: Krita's undo action needs a view) against a real Tether server on the
tiny model. One Krita run (tests/krita/krita_runner.py) plays tests/krita/live_scenario.py
and records what happened; the tests below check the record. The tiny model's pictures
are noise: the tests check where pixels change, not what they show."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from krita_runner import krita_home, prepare_plugin, run_scenario  # noqa: E402

LIVE = "Tether live"
SIZE = (192, 144)


@pytest.fixture(scope="module")
def live_run(server, tmp_path_factory):
    """Returns (report, output folder)."""
    base = tmp_path_factory.mktemp("krita-live")
    plugin_tree, _ = prepare_plugin(base)
    out = base / "out"
    config = {"out": str(out), "address": server, "down": "127.0.0.1:1", "size": SIZE}
    home = krita_home(tmp_path_factory)
    return run_scenario("live_scenario", config, base, plugin_tree, home, window=True), out


@pytest.fixture(scope="module")
def session(live_run):
    return live_run[0]["session"]


def raw(out: Path, name: str, channels: int = 4) -> np.ndarray:
    width, height = SIZE
    data = np.frombuffer((out / f"{name}.raw").read_bytes(), dtype=np.uint8)
    return data.reshape(height, width, channels) if channels > 1 else data.reshape(height, width)


def test_what_is_sent_leaves_the_live_layer_out(live_run):
    assert live_run[0]["exclusion"] == {
        "shows_result": True,
        "below_is_painting": True,
        "shown_again": True,
    }


def test_edits_reach_the_server_and_results_land_in_the_live_layer(live_run, session):
    out = live_run[1]
    assert session["first"] and session["second"]
    assert session["docker_on"] == {"live": True, "apply": True, "repaint": False}
    assert session["sessions_on"] == 1
    names = session["layers_live"]
    assert names[0] == "Background" and LIVE in names

    selection = raw(out, "selection", channels=1)
    inside, outside = selection == 255, selection == 0
    first, second = raw(out, "live1"), raw(out, "live2")
    assert np.all(first[outside][:, 3] == 0) and np.all(first[inside][:, 3] == 255)
    # The stroke changed the input, so the newer result differs inside the selection.
    assert np.any(first[inside] != second[inside])
    assert np.all(second[outside][:, 3] == 0)


def test_the_window_has_the_live_actions(session):
    assert session["actions"] == [
        "tether_repaint_selection",
        "tether_cancel",
        "tether_live",
        "tether_live_apply",
    ]


def test_repaint_is_refused_while_live_is_on(session):
    assert session["repaint_while_live"] is False
    assert session["alerts"] == ["Live is on: turn it off before repainting."]


def test_apply_adds_the_result_under_the_live_layer_in_one_undo_step(live_run, session):
    applied = session["layers_applied"]
    assert applied.index("a red apple") == applied.index(LIVE) - 1
    assert np.array_equal(raw(live_run[1], "applied"), raw(live_run[1], "live2"))
    assert session["undo_text"] == "Undo Add Layer"
    assert session["layers_after_undo"] == session["layers_live"]  # one Undo: gone, all of it


def test_live_off_ends_the_session_and_its_threads(session):
    assert session["stopped"] and session["last_message"] == "Live is off."
    assert session["docker_off"] == {"live": False, "apply": False, "repaint": True}
    assert LIVE not in session["layers_off"]
    assert session["threads"] == [] and session["sessions_ended"]


def test_a_server_out_of_reach_is_told_in_the_docker(live_run):
    down = live_run[0]["server_down"]
    assert down["started"] and down["ended"]
    assert down["status"].startswith("Cannot reach the Tether server at 127.0.0.1:1")
    assert down["alerts"] == []  # no message box while painting
    assert down["docker"]["live"] is False
    assert down["layers"] == ["Background"] and down["threads"] == []


def test_live_is_pictured_with_the_docker(live_run, session):
    """The README's picture of Live (docs/krita_live.png) is a copy of this one."""
    assert session["picture"]
    png = (live_run[1] / "krita_live.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 3 * SIZE[0] + 300 and height > 3 * SIZE[1]  # the canvas 3x, the docker
