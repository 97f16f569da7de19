"""Tiny autoencoder (TAESD): a model's `taesd` folder, read by the catalog, loaded with
the model, used for live frames and full previews (and final images when asked), held to
diffusers' pipelines given the same AutoencoderTiny as their `vae`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import model_files
import numpy as np
import pytest
import tether
import torch
from conftest import Server
from diffusers import AutoencoderTiny
from test_engine_parity import SEED, SIZE, diffusers_image
from test_few_step import STEPS, run
from test_few_step import job as few_step_job
from tether_server import catalog
from tether_server.engine import Engine, Job
from tether_server.errors import ModelConfigError
from tether_server.registry import ModelRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
from random_models import random_taesd  # noqa: E402


@pytest.fixture(scope="module")
def taesd() -> AutoencoderTiny:
    return random_taesd(full_size=False)


@pytest.fixture(scope="module")
def engine(tiny_models, taesd) -> Engine:
    return Engine(dataclasses.replace(tiny_models, taesd=taesd))


@pytest.fixture(scope="module")
def depth() -> np.ndarray:
    return np.random.default_rng(21).random((SIZE, SIZE, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    return np.random.default_rng(22).random((SIZE, SIZE, 3), dtype=np.float32)


def job(depth: np.ndarray, **fields) -> Job:
    return few_step_job("lcm", depth, **fields)


def test_tiny_img2img_matches_diffusers_with_the_same_tiny_vae(engine, depth, colour):
    """The encoder side (img2img's init latents, drawing nothing) and the decoder side."""
    with_tiny = dataclasses.replace(engine.models, vae=engine.models.taesd)
    expected = diffusers_image(
        with_tiny,
        [("depth", depth, 0.8, 0, 1)],
        "lcm",
        init=colour,
        strength=0.5,
        num_inference_steps=STEPS,
        guidance_scale=1.0,
    )
    tiny = job(depth, init_image=colour, strength=0.5, autoencoder="tiny")
    actual = run(engine, tiny)
    assert np.array_equal(actual, expected), np.abs(actual - expected).max()
    # What parity holds: the full VAE gives another image.
    full = run(engine, dataclasses.replace(tiny, autoencoder="full"))
    assert np.abs(full - actual).max() > 0.02


def test_full_previews_are_tiny_decodes(engine, tiny_models, depth):
    """LCM's last step returns its clean prediction, so the last full preview is the final
    image decoded by whatever decodes previews: the TAESD where the model has one."""

    def last_preview(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        previews = []
        previewed = job(
            depth, preview="full", on_progress=lambda step, total, image: previews.append(image)
        )
        final = run(engine, previewed)
        assert len(previews) == STEPS and previews[-1].shape == (SIZE, SIZE, 3)
        return previews[-1], final

    preview, final = last_preview(engine)
    assert np.allclose(preview, run(engine, job(depth, autoencoder="tiny")), atol=1e-6)
    assert np.abs(preview - final).max() > 0.02  # the final image is the VAE's
    preview, final = last_preview(Engine(tiny_models))  # no TAESD: the VAE decodes
    assert np.allclose(preview, final, atol=1e-6)


def test_tiny_on_a_model_without_one_is_the_vae(tiny_models, engine, depth):
    assert np.array_equal(
        run(Engine(tiny_models), job(depth, autoencoder="tiny")), run(engine, job(depth))
    )


@pytest.fixture(scope="module")
def saved(tiny_models, taesd, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("taesd")
    model_files.diffusers_folder(tiny_models, root / "tiny-sd15")
    taesd.save_pretrained(root / "taesd")
    tiny_models.controls["depth"].model.save_pretrained(root / "control-depth")
    toml = root / "models.toml"
    toml.write_text(
        """
        [models.plain]
        path = "tiny-sd15"
        [models.quick]
        path = "tiny-sd15"
        taesd = "taesd"
        [controls.depth]
        path = "control-depth"
        """
    )
    return toml


def test_the_catalog_names_a_models_taesd_and_it_loads(saved, taesd):
    models = catalog.read(saved)
    assert models.models["plain"].taesd is None
    assert models.models["quick"].taesd == saved.parent / "taesd"
    loaded = ModelRegistry(models, device="cpu", dtype=torch.float32).load("quick")
    assert isinstance(loaded.taesd, AutoencoderTiny)
    assert torch.equal(loaded.taesd.decoder.layers[0].weight, taesd.decoder.layers[0].weight)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nowhere", r"\[models.m\] taesd: no such file or folder"),
        ("tiny-sd15/vae", r"\[models.m\] taesd must be a tiny autoencoder .* says 'AutoencoderKL'"),
        ("tiny-sd15/unet/config.json", r"not a diffusers folder \(config.json missing\)"),
    ],
)
def test_a_taesd_that_is_not_one_is_refused_naming_it(saved, value, message):
    toml = saved.parent / "bad.toml"
    toml.write_text(f'[models.m]\npath = "tiny-sd15"\ntaesd = "{value}"\n')
    with pytest.raises(ModelConfigError, match=message):
        catalog.read(toml)


def test_live_frames_through_a_server_use_the_models_taesd(saved, engine):
    """The same frame through a model with a TAESD and one without, on a real server; the
    TAESD one is the engine's tiny img2img of the frame."""
    rng = np.random.default_rng(23)
    colour = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    depth_map = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    server = Server("--models", str(saved)).wait_serving()
    try:
        with tether.Client(server.address) as client:
            results = {}
            for model in ("plain", "quick"):
                config = tether.LiveConfig(
                    "a lighthouse on a cliff",
                    model=model,
                    controls=[tether.Control("depth", None, weight=0.8)],
                    seed=SEED,
                )
                with client.live(config) as session:
                    session.send(tether.LiveFrame(1, colour, controls=[depth_map]))
                    results[model] = next(iter(session))
    finally:
        server.stop()
    assert results["quick"].frame_id == 1
    expected = run(
        engine,
        job(
            depth_map.astype(np.float32) / 255,
            init_image=colour.astype(np.float32) / 255,
            strength=0.5,
            autoencoder="tiny",
        ),
    )
    tiny = results["quick"].image.astype(int)
    assert np.abs(tiny - np.round(expected * 255)).max() <= 1
    assert np.abs(tiny - results["plain"].image).mean() > 5
