"""The `tether` command against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tether.cli import parse_control

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tether_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args], capture_output=True, text=True, timeout=120
    )


def test_generate_with_controls_and_previews(server, tmp_path):
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "depth.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "edges.png")
    done = tether_cli(
        "generate",
        "a lighthouse",
        "--server",
        server,
        "--control",
        f"depth={tmp_path / 'depth.png'}@0.8",
        "--control",
        f"canny={tmp_path / 'edges.png'}",
        "--steps",
        "3",
        "--seed",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        str(tmp_path / "out.jpg"),
        "--previews",
        str(tmp_path / "frames"),
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'out.jpg'} (seed 1" in done.stdout
    assert Image.open(tmp_path / "out.jpg").size == (64, 64)
    frames = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert frames == ["step_001.png", "step_002.png", "step_003.png"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "x", "--steps", "0"], "tether: invalid argument: steps: must be 1 to 150"),
        (["generate", "x", "--control", "pose=missing.png"], "No such file or directory"),
        (["generate", "x", "--control", "depth"], "expected MODEL=PATH[@WEIGHT]"),
        (["generate", "x", "-o", "out.gif"], "use a .png, .jpg or .webp file name"),
    ],
)
def test_errors_are_one_line_without_traceback(server, tmp_path, args, message):
    done = tether_cli(*args, "--server", server)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_server(tmp_path):
    done = tether_cli("models", "--server", "127.0.0.1:9")
    assert done.returncode == 1 and done.stderr.startswith("tether: unavailable:")


def test_models_and_info(server):
    models = tether_cli("models", "--server", server)
    assert "model    tiny (sd15, 256x256 by default)" in models.stdout
    assert "control  depth (depth)" in models.stdout
    info = tether_cli("info", "--server", server)
    assert "on cpu (float32)" in info.stdout


def test_parse_control():
    control = parse_control("depth=maps/d@1.png@0.5")
    assert (control.model, str(control.image), control.weight) == ("depth", "maps/d@1.png", 0.5)
    assert parse_control("canny=e.png").weight == 1.0


def test_canny_preprocessor_from_the_command_line(server, tmp_path):
    photo = np.full((64, 64, 3), 40, np.uint8)
    photo[16:48, 16:48] = 220
    Image.fromarray(photo).save(tmp_path / "photo.png")
    done = tether_cli(
        "generate",
        "x",
        "--server",
        server,
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "--control",
        f"canny={tmp_path / 'photo.png'}@0.7:canny",
        "-o",
        str(tmp_path / "o.png"),
    )
    assert done.returncode == 0, done.stderr
    control = parse_control("canny=C:/maps/photo.png@0.7:canny")
    assert str(control.image) == "C:/maps/photo.png" and control.weight == 0.7
    assert type(control.preprocessor).__name__ == "Canny"


def test_examples_run_against_a_server(server, tmp_path):
    done = subprocess.run(
        [sys.executable, EXAMPLES / "engine_buffers.py", "--server", server, "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    depth_map = np.asarray(Image.open(tmp_path / "depth_map.png"))
    assert depth_map.shape == (256, 256, 3) and depth_map.max() == 255 and depth_map.min() == 0
    assert (tmp_path / "result.png").exists()


def test_the_demo_writes_frames_and_the_result(tmp_path):
    """`make demo`, shortened: its own server, three units, streamed previews."""
    done = subprocess.run(
        [sys.executable, EXAMPLES / "demo.py", "--out", tmp_path, "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"result: {tmp_path / 'result.png'}" in done.stdout
    frames = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert frames == ["step_001.png", "step_002.png", "step_003.png"]
