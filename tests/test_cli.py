"""The `tether` command against a real server."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Server
from PIL import Image
from tether.cli import parse_control

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "cli-test-token"


def tether_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
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
        (["generate", "x", "--steps", "500"], "tether: invalid argument: steps: must be 1 to 150"),
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "-8"], "argument --width: must be a positive multiple of 8 (got -8)"),
        (["--height", "0"], "argument --height: 0 is not a size; leave the option out"),
        (["--steps", "-1"], "argument --steps: must be 1 or more (got -1)"),
        (["--seed", "-2"], "argument --seed: must be 0 or more, or -1 for a random seed"),
    ],
)
def test_numbers_out_of_range_name_their_option(args, message):
    done = tether_cli("generate", "x", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Value out of range" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def one_step(server: str, *args: str) -> subprocess.CompletedProcess:
    """`tether generate x` with one step."""
    return tether_cli("generate", "x", "--server", server, "--steps", "1", *args)


def test_seed_minus_one_is_a_random_seed(server, tmp_path):
    seeds = []
    for name in (str(tmp_path / "a.png"), str(tmp_path / "b.png")):
        done = one_step(server, "--seed", "-1", "--width", "64", "--height", "64", "-o", name)
        assert done.returncode == 0, done.stderr
        seeds.append(int(re.search(r"\(seed (\d+),", done.stdout).group(1)))
    assert seeds[0] != seeds[1]


def test_the_init_image_gives_the_output_size(server, tmp_path):
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(tmp_path / "photo.png")
    init = ["--init", str(tmp_path / "photo.png"), "--strength", "1"]
    done = one_step(server, *init, "-o", str(tmp_path / "out.png"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "out.png").size == (128, 128)


def test_an_init_image_off_the_grid_of_8_is_cropped_to_its_centre(server, tmp_path):
    """130x100 -> 128x96, the mask cropped alike; an all-keep mask returns the crop as is."""
    photo = np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((100, 130), np.uint8)).save(tmp_path / "mask.png")
    files = ["--init", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]
    done = one_step(
        server, *files, "--strength", "1", "--mask-blur", "0", "-o", str(tmp_path / "out.png")
    )
    assert done.returncode == 0, done.stderr
    assert "--init is 130x100; using its centre 128x96" in done.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), photo[2:98, 1:129])


def test_preprocessor_and_weight_come_in_either_order(tmp_path):
    for spec in ("canny=lineart.png:invert@0.5", "canny=lineart.png@0.5:invert"):
        control = parse_control(spec)
        assert (str(control.image), control.weight) == ("lineart.png", 0.5)
        assert type(control.preprocessor).__name__ == "Invert"
    with pytest.raises(
        argparse.ArgumentTypeError, match="one preprocessor at most: :canny or :invert"
    ):
        parse_control("canny=a.png:invert@0.5:canny")
    done = tether_cli("generate", "x", "--control", f"canny={tmp_path / 'lineart.png'}:invert@0.5")
    assert done.returncode == 1
    assert done.stderr.endswith(f"No such file or directory: '{tmp_path / 'lineart.png'}'\n")


def test_help_shows_the_defaults_but_never_the_token():
    env = {**os.environ, "TETHER_TOKEN": "secret-in-the-environment"}
    generate = tether_cli("generate", "--help", env=env).stdout
    for default in ("(default: out.png)", "(default: fast)", "(default: 127.0.0.1:50051)"):
        assert default in " ".join(generate.split()), default
    assert "denoising steps (default: the server's)" in " ".join(generate.split())
    assert "None" not in generate
    serve = tether_cli("serve", "--help", env=env).stdout
    assert "(default: 32)" in serve
    assert "secret-in-the-environment" not in generate + serve


def test_ctrl_c_cancels_in_one_line(server, tmp_path):
    frames = tmp_path / "frames"
    command = ["generate", "x", "--server", server, "--steps", "150", "--previews", str(frames)]
    process = subprocess.Popen(
        [sys.executable, "-m", "tether", *command, "-o", str(tmp_path / "out.png")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (frames.exists() and any(frames.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err, out) == (130, "tether: cancelled\n", "")
    assert tether_cli("models", "--server", server).returncode == 0


@pytest.fixture(scope="module")
def token_server() -> Iterator[str]:
    running = Server("--token", TOKEN).wait_serving()
    yield running.address
    running.stop()


def test_token_errors_say_how_to_pass_the_token(token_server):
    env = {key: value for key, value in os.environ.items() if key != "TETHER_TOKEN"}
    missing = tether_cli("models", "--server", token_server, env=env)
    assert missing.stderr == (
        "tether: unauthenticated: the server needs a token: pass --token TOKEN or set "
        "TETHER_TOKEN\n"
    )
    wrong = tether_cli("models", "--server", token_server, "--token", "nope", env=env)
    assert wrong.stderr.startswith("tether: unauthenticated: the server refused the token")
    right = tether_cli("models", "--server", token_server, env={**env, "TETHER_TOKEN": TOKEN})
    assert right.returncode == 0 and "model    tiny" in right.stdout


def test_tls_against_a_plaintext_server_is_one_line(server):
    done = tether_cli("models", "--server", server, "--tls")
    assert done.returncode == 1
    assert done.stderr == (
        f"tether: unavailable: the TLS handshake with {server} failed; is it a plaintext "
        "server? Then leave out --tls\n"
    )
