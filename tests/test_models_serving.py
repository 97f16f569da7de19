"""Several base models in one server: each held to diffusers' pipeline on its own weights,
loaded on first use, at most --max-loaded resident, least recently used unloaded first."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import model_files
import numpy as np
import pytest
import tether
import torch
from conftest import Server
from diffusers import StableDiffusionControlNetPipeline
from tether_server import catalog, models, schedulers
from tether_server.engine import Engine, Job
from tether_server.registry import ModelRegistry

SIZE = 64
STEPS = 3
PROMPT = "a lighthouse on a cliff"  # one prompt for both models: a shared cache would show


@pytest.fixture(scope="module")
def bases() -> dict[str, models.ModelSet]:
    """Two tiny models with different weights; b's ControlNets are not served (a's are)."""
    return {"a": models.tiny(seed=0), "b": models.tiny(seed=1)}


@pytest.fixture(scope="module")
def toml(bases, tmp_path_factory) -> Path:
    """a as a single file, b as a diffusers folder, a's canny ControlNet as a single file."""
    root = tmp_path_factory.mktemp("two-models")
    model_files.single_file(bases["a"], root / "a.safetensors")
    model_files.configs(bases["a"], root / "a-configs")
    model_files.diffusers_folder(bases["b"], root / "b")
    model_files.control_file(bases["a"], "canny", root / "control_v11p_sd15_canny.safetensors")
    model_files.control_config(bases["a"], root / "control-configs")
    path = root / "models.toml"
    path.write_text(
        """
        [models.a]
        path = "a.safetensors"
        config = "a-configs"
        [models.b]
        path = "b"
        [controls.canny]
        path = "control_v11p_sd15_canny.safetensors"
        config = "control-configs"
        """
    )
    return path


@pytest.fixture(scope="module")
def edges() -> np.ndarray:
    return (np.random.default_rng(3).random((SIZE, SIZE, 3)) > 0.8).astype(np.uint8) * 255


def diffusers_image(base: models.ModelSet, net, edges: np.ndarray, seed: int) -> np.ndarray:
    pipe = StableDiffusionControlNetPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=base.unet,
        controlnet=net,
        scheduler=schedulers.create("unipc", base.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    control = torch.from_numpy(edges.astype(np.float32) / 255).permute(2, 0, 1)[None]
    image = pipe(
        prompt=PROMPT,
        image=control,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images[0]
    return (image * 255).round().astype(np.uint8)


def generate(client: tether.Client, model: str | None, edges: np.ndarray, seed: int):
    return client.generate(
        PROMPT,
        model=model,
        controls=[tether.Control("canny", edges)],
        steps=STEPS,
        width=SIZE,
        height=SIZE,
        seed=seed,
        scheduler="unipc",
    )


@pytest.fixture(scope="module")
def server(toml):
    running = Server("--models", str(toml), "--max-loaded", "1").wait_serving()
    yield running
    running.stop()


def test_each_model_matches_diffusers_on_its_own_weights(server, bases, edges):
    net = bases["a"].controls["canny"].model  # ControlNets serve every model
    with tether.Client(server.address) as client:
        listing = client.models()
        assert [(m.name, m.family, m.default_width) for m in listing.models] == [
            ("a", "sd15", 256),
            ("b", "sd15", 256),
        ]
        images = {name: generate(client, name, edges, seed=5).image for name in ("b", "a")}
        default = generate(client, None, edges, seed=5).image
    for name in ("a", "b"):
        np.testing.assert_array_equal(images[name], diffusers_image(bases[name], net, edges, 5))
    assert not np.array_equal(images["a"], images["b"])
    np.testing.assert_array_equal(default, images["a"])  # the first model is the default


def test_queued_jobs_of_an_unloaded_model_wait_and_succeed(server, edges):
    """--max-loaded 1: jobs for a and b alternate in the queue, so each batch unloads the
    other model; every job still finishes with its own model's image."""
    with tether.Client(server.address) as client:
        expected = {name: generate(client, name, edges, seed=9).image for name in ("a", "b")}
        blocker = client.stream("x", model="b", steps=20, width=SIZE, height=SIZE)
        assert isinstance(next(iter(blocker)), tether.Queued)
        order = ["a", "b", "a", "b"]
        results: list = [None] * len(order)

        def one(k: int) -> None:
            results[k] = generate(client, order[k], edges, seed=9)

        threads = [threading.Thread(target=one, args=(k,)) for k in range(len(order))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        blocker.cancel()
    for name, result in zip(order, results):
        # Jobs of one model may share a batch, which can move a value by 1/255.
        np.testing.assert_allclose(result.image, expected[name], atol=1)
    assert server.log.read_text().count("unloaded model") >= 3


def test_cli_picks_a_model_and_lists_them(server, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "tether", *args, "--server", server.address]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    listed = cli("models")
    assert listed.returncode == 0, listed.stderr
    assert "model    a (sd15, 256x256 by default) [default]" in listed.stdout
    assert "model    b (sd15, 256x256 by default)\n" in listed.stdout
    assert "control  canny (canny)" in listed.stdout
    wrong = cli("generate", "x", "--model", "c", "-o", str(tmp_path / "c.png"))
    assert wrong.returncode == 1
    assert wrong.stderr == "tether: not found: model: no model 'c'; this server has 'a', 'b'\n"
    right = cli("generate", "x", "--model", "b", "--steps", "2", "--width", "64", "--height", "64",
                "-o", str(tmp_path / "b.png"))  # fmt: skip
    assert right.returncode == 0, right.stderr
    assert (tmp_path / "b.png").stat().st_size > 0


def test_least_recently_used_model_is_unloaded_first(bases, toml, tmp_path):
    model_files.diffusers_folder(models.tiny(seed=2), tmp_path / "c")
    extended = tmp_path / "models.toml"
    extended.write_text(
        toml.read_text().replace('"a.safetensors"', f'"{toml.parent / "a.safetensors"}"')
        .replace('"a-configs"', f'"{toml.parent / "a-configs"}"')
        .replace('path = "b"', f'path = "{toml.parent / "b"}"')
        .replace('"control_v11p_sd15_canny', f'"{toml.parent}/control_v11p_sd15_canny')
        .replace('"control-configs"', f'"{toml.parent / "control-configs"}"')
        + '[models.c]\npath = "c"\n'
    )  # fmt: skip
    registry = ModelRegistry(
        catalog.read(extended), device="cpu", dtype=torch.float32, max_loaded=2
    )
    engine = Engine(registry)

    def run(model: str) -> np.ndarray:
        job = Job(prompt=PROMPT, model=model, steps=2, guidance_scale=7.5, width=SIZE, height=SIZE)
        return engine.run([job])[0].image

    first_b = run("b")
    run("a")
    run("b")  # a is now the least recently used
    run("c")
    assert registry.loaded() == ["b", "c"]
    run("a")
    assert registry.loaded() == ["c", "a"]
    np.testing.assert_array_equal(run("b"), first_b)  # loaded again, the same weights


def test_jobs_on_different_models_are_never_batched(toml):
    """Batching reads only the models' tokenizers: neither model is loaded for it."""
    registry = ModelRegistry(catalog.read(toml), device="cpu", dtype=torch.float32)
    engine = Engine(registry)
    job = Job(prompt="x", steps=2, guidance_scale=7.5, width=SIZE, height=SIZE)
    other = Job(prompt="x", model="b", steps=2, guidance_scale=7.5, width=SIZE, height=SIZE)
    assert engine.batch_key(job) != engine.batch_key(other)
    assert engine.batch_key(job) == engine.batch_key(Job(**{**vars(job), "model": "a"}))
    assert registry.loaded() == []
