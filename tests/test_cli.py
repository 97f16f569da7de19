"""The `tether` command against a real server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tether.cli import parse_control


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
