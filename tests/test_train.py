"""Training, on the real code: the ControlNet paper's claims (a fresh ControlNet changes
nothing, its zero convolutions pass gradients on from the first step, training lowers the
loss), and the `tether train` commands end to end (files, TOML entry, resume, pairs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tether
import torch
from conftest import Server
from diffusers import ControlNetModel, DDPMScheduler
from PIL import Image
from tether.cli import main as tether_main
from tether_server import catalog, models, saving, scenes
from tether_server.engine import ControlInput, Engine, Job
from tether_server.registry import ModelRegistry
from tether_server.train import architecture, data, objectives

HINT = ",".join(map(str, architecture.HINT_CHANNELS))
SIZE = 64  # the random embedded model's 256 would cost 16 times as much


def fresh_controlnet(base: models.ModelSet) -> ControlNetModel:
    return ControlNetModel.from_unet(
        base.unet, conditioning_embedding_out_channels=architecture.HINT_CHANNELS
    )


@pytest.fixture(scope="module")
def batch(tiny_models):
    """Four training scenes with their depth maps, latents and caption embeddings."""
    examples = data.from_scenes(4, SIZE, "depth")
    latents = data.encode(tiny_models.vae, examples.images)
    maps = np.stack([examples.conditions[i] for i in range(4)])
    with torch.no_grad():
        embeddings = objectives.encode_prompts(
            tiny_models.tokenizer, tiny_models.text_encoder, examples.captions
        )
    index = np.arange(4)
    clean = latents.sample(index, torch.Generator().manual_seed(0), 1.0)
    return clean, embeddings, torch.from_numpy(maps).permute(0, 3, 1, 2)


def loss_of(base, net, batch, seed: int = 0) -> torch.Tensor:
    latents, embeddings, condition = batch
    return objectives.noise_prediction_loss(
        base.unet,
        DDPMScheduler.from_config(base.scheduler_config),
        latents,
        embeddings,
        torch.Generator().manual_seed(seed),
        net,
        condition,
    )


def test_fresh_controlnet_leaves_the_base_unchanged(tiny_models, batch):
    net = fresh_controlnet(tiny_models)
    latents, embeddings, condition = batch
    t = torch.tensor([500] * 4)
    with torch.no_grad():
        down, mid = net(latents, t, embeddings, controlnet_cond=condition, return_dict=False)
        assert not any(r.any() for r in [*down, mid])
        alone = tiny_models.unet(latents, t, embeddings).sample
        joined = tiny_models.unet(
            latents,
            t,
            embeddings,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
    assert torch.equal(alone, joined)
    # Served: a job with the fresh unit at full weight draws what the base draws alone.
    served = dataclasses.replace(
        tiny_models, controls={"fresh": models.ControlNet("fresh", "depth", net)}
    )
    depth = scenes.render(scenes.describe(scenes.HELD_OUT_SEED), SIZE).control("depth")
    job = Job(
        prompt="a red sphere on a grey floor",
        seed=3,
        steps=4,
        guidance_scale=7.5,
        width=SIZE,
        height=SIZE,
    )
    with_unit = dataclasses.replace(job, controls=[ControlInput("fresh", depth, weight=2.0)])
    engine = Engine(served)
    assert np.array_equal(engine.run([job])[0].image, engine.run([with_unit])[0].image)


def test_gradients_reach_the_zero_convolutions_then_the_copy(tiny_models, batch):
    """At the first step the zero convolutions get gradients (their input is not zero) and
    the copy does not (their weights are zero); after one update the copy learns too. The
    locked base gets none."""
    net = fresh_controlnet(tiny_models).train()
    zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block]
    copy = [p for block in net.down_blocks for p in block.parameters()]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

    loss_of(tiny_models, net, batch).backward()
    assert all(conv.weight.grad.abs().sum() > 0 for conv in zero_convs)
    assert all(p.grad is None or not p.grad.any() for p in copy)
    assert all(p.grad is None for p in tiny_models.unet.parameters())

    optimizer.step()
    optimizer.zero_grad()
    loss_of(tiny_models, net, batch, seed=1).backward()
    assert sum(p.grad.abs().sum() for p in copy if p.grad is not None) > 0


@pytest.fixture()
def tiny_toml(tiny_models, tmp_path) -> Path:
    """The embedded base written as a model folder of its own, for --add to write to."""
    return saving.save(dataclasses.replace(tiny_models, controls={}), tmp_path / "tiny")


def load(toml: Path) -> models.ModelSet:
    """The default model of a models TOML, as a server loads it."""
    return ModelRegistry(catalog.read(toml), device="cpu", dtype=torch.float32).load("")


def train(*args: str) -> int:
    return tether_main(["train", *args, "--threads", "1"])


def test_train_control_lowers_the_loss_and_serves_the_unit(tiny_models, tiny_toml, batch):
    out = tiny_toml.parent / "depth-unit"
    steps = ["--steps", "12", "--batch", "8", "--lr", "2e-3", "--scenes", "4"]
    common = ["control", "--kind", "depth", "--models", str(tiny_toml), "--out", str(out)]
    assert train(*common, "--add", "--size", str(SIZE), "--hint-channels", HINT, *steps) == 0

    # The loss on the scenes it saw, same noise and timesteps, before and after.
    trained = ControlNetModel.from_pretrained(out)
    with torch.no_grad():
        before = loss_of(tiny_models, fresh_controlnet(tiny_models), batch, seed=5)
        after = loss_of(tiny_models, trained, batch, seed=5)
    assert after < before

    # --add wrote the entry that serves it: a server on that TOML lists the unit, and a
    # request with it draws another picture than one without it.
    depth = scenes.render(scenes.describe(scenes.HELD_OUT_SEED), SIZE).control("depth")
    running = Server("--models", str(tiny_toml)).wait_serving()
    try:
        with tether.Client(running.address) as client:
            listed = client.models().controls
            request = dict(steps=4, seed=3, width=SIZE, height=SIZE)
            plain = client.generate("a red sphere on a grey floor", **request)
            steered = client.generate(
                "a red sphere on a grey floor", controls=[tether.Control("depth", depth)], **request
            )
    finally:
        running.stop()
    assert [(c.name, c.kind) for c in listed] == [("depth", "depth")]
    assert not np.array_equal(plain.image, steered.image)


def test_train_base_writes_a_model_set_and_resumes(tmp_path, capsys):
    out = tmp_path / "base"
    small = ["--scenes", "4", "--vae-batch", "2", "--batch", "2", "--vae-steps", "2"]
    assert train("base", "--out", str(out), *small, "--steps", "2") == 0
    loaded = load(out / "models.toml")
    assert loaded.name == "tiny" and loaded.default_size == 128
    job = Job(
        prompt="a blue box on a white floor", steps=2, guidance_scale=7.5, width=64, height=64
    )
    assert Engine(loaded).run([job])[0].image.shape == (64, 64, 3)

    # Checkpoints are not overwritten by accident; --resume goes on from them.
    assert train("base", "--out", str(out), *small, "--steps", "3") == 1
    assert "checkpoints holds checkpoints: pass --resume" in capsys.readouterr().err
    assert train("base", "--out", str(out), *small, "--steps", "3", "--resume") == 0
    checkpoints = out / "checkpoints"
    assert torch.load(checkpoints / "diffusion.ckpt", weights_only=True)["step"] == 3
    assert torch.load(checkpoints / "autoencoder.ckpt", weights_only=True)["step"] == 2


def write_pairs(folder: Path, count: int) -> None:
    for sub in ("images", "conditions", "captions"):
        (folder / sub).mkdir(parents=True)
    for seed in range(count):
        scene = scenes.render(scenes.describe(seed), size=96)
        Image.fromarray(scene.image).save(folder / "images" / f"{seed}.png")
        edges = (scene.control("canny") * 255).astype(np.uint8)
        Image.fromarray(edges).save(folder / "conditions" / f"{seed}.png")
        (folder / "captions" / f"{seed}.txt").write_text(scene.caption)


def test_train_control_from_a_folder_of_pairs(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    write_pairs(pairs, 3)
    out = tmp_path / "lines"
    args = ["control", "--pairs", str(pairs), "--kind", "lineart", "--out", str(out)]
    assert train(*args, "--steps", "2", "--batch", "2", "--hint-channels", HINT) == 0
    printed = capsys.readouterr().out
    assert f'[controls.lineart]\npath = "{out.resolve()}"\nkind = "lineart"' in printed
    assert (out / "diffusion_pytorch_model.safetensors").is_file()

    (pairs / "captions" / "1.txt").unlink()
    assert train(*args, "--steps", "2", "--out", str(tmp_path / "again")) == 1
    assert "images/1 has no captions/1.txt" in capsys.readouterr().err


BAD = {
    "scene kind": (["control", "--kind", "seg"], "--kind: scenes give depth, normal, canny"),
    "unknown kind": (["control", "--kind", "x", "--pairs", "."], "--kind: must be one of"),
    "add": (["control", "--kind", "depth", "--add"], "--add: needs --models FILE"),
    "pairs": (["control", "--kind", "seg", "--pairs", "nowhere"], "--pairs nowhere: not a"),
    "models": (["control", "--kind", "depth", "--models", "nowhere.toml"], "--models: nowhere"),
    "steps": (["base", "--steps", "0"], "--steps: must be at least 1"),
    "size": (["control", "--kind", "depth", "--size", "100"], "--size: must be a positive"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_options_name_the_option(case, tmp_path, capsys):
    args, message = BAD[case]
    assert train(*args, "--out", str(tmp_path / "out")) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
