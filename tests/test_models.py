"""Real model loading, on the tiny model saved to disk in diffusers' own layout."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tether_server import models
from tether_server.engine import ControlInput, Engine, Job
from tether_server.errors import ModelConfigError


@pytest.fixture(scope="module")
def saved(tiny_models, tmp_path_factory) -> Path:
    """tiny, written as a base-model folder plus one folder per ControlNet."""
    root = tmp_path_factory.mktemp("models")
    base = root / "tiny-sd15"
    tiny_models.unet.save_pretrained(base / "unet")
    tiny_models.vae.save_pretrained(base / "vae")
    tiny_models.text_encoder.save_pretrained(base / "text_encoder")
    tiny_models.tokenizer.save_pretrained(base / "tokenizer")
    (base / "scheduler").mkdir()
    (base / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "PNDMScheduler", **tiny_models.scheduler_config})
    )
    for name, control in tiny_models.controls.items():
        control.model.save_pretrained(root / f"control-{name}")
    return root


def write_toml(folder: Path, text: str) -> Path:
    path = folder / "models.toml"
    path.write_text(text)
    return path


def test_tiny_builds_fast_and_is_sd15_shaped():
    started = time.perf_counter()
    tiny = models.tiny()
    assert time.perf_counter() - started < 1.0
    assert tiny.vae_scale_factor == 8
    assert tiny.unet.config.in_channels == 4
    assert tiny.tokenizer.model_max_length == 77
    assert set(tiny.controls) == {"canny", "depth", "normal"}
    # Same seed, same weights: the embedded model is reproducible.
    again = models.tiny()
    assert torch.equal(tiny.unet.conv_in.weight, again.unet.conv_in.weight)


def test_toml_loads_the_saved_folders(saved, tiny_models):
    config = write_toml(
        saved,
        """
        name = "my-sd"
        [base]
        path = "tiny-sd15"
        [controls.edges]
        path = "control-canny"
        kind = "canny"
        [controls.depth]
        path = "control-depth"
        kind = "depth"
        """,
    )
    loaded = models.load(config, device="cpu")
    assert loaded.name == "my-sd"
    assert loaded.dtype == torch.float32
    assert {n: c.kind for n, c in loaded.controls.items()} == {"edges": "canny", "depth": "depth"}
    # Same weights, so the same image as the in-memory model.
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)

    def render(model_set, control_name):
        job = Job(
            prompt="x",
            steps=3,
            guidance_scale=7.5,
            width=64,
            height=64,
            controls=[ControlInput(control_name, image)],
        )
        return Engine(model_set).run([job])[0].image

    np.testing.assert_array_equal(render(loaded, "edges"), render(tiny_models, "canny"))


def test_pickle_checkpoint_is_refused(saved, tiny_models, tmp_path):
    tiny_models.controls["depth"].model.save_pretrained(
        tmp_path / "pickled", safe_serialization=False
    )
    config = write_toml(
        tmp_path,
        f"""
        [base]
        path = "{saved / "tiny-sd15"}"
        [controls.depth]
        path = "pickled"
        kind = "depth"
        """,
    )
    with pytest.raises(ModelConfigError, match="only safetensors weights are loaded.*pickle"):
        models.load(config, device="cpu")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[controls.x]\npath='a'\nkind='canny'", r"needs a \[base\] table"),
        (
            "[base]\npath = 'tiny-sd15'\n[controls.x]\npath='control-canny'\nkind='edges'",
            "controls.x.kind must be one of canny, depth",
        ),
        ("[base\npath=", "models.toml"),
        ("[base]\npath = 'no-such-folder'", "no-such-folder"),
    ],
)
def test_bad_toml_says_what_is_wrong(saved, text, message):
    with pytest.raises(ModelConfigError, match=message):
        models.load(write_toml(saved, text), device="cpu")
