"""Seamless tiling (`tether_server.seamless`): circular padding per axis in the UNet, the
ControlNets and the autoencoder, for the duration of a run.

- The padding really wraps: a network that sees a torus commutes with rolling its input
  (by a multiple of its downsampling), on the wrapped axes and only there; an untiled run
  does not. "xy" is A1111's Conv2d(padding_mode="circular"), bit for bit.
- It is gone afterwards: untiled outputs are bit for bit what they were (and the parity
  tests in test_engine_parity.py hold untiled jobs to diffusers).
- A tileable map gives a tileable image: the step across the wrap edge is no larger than
  the image's own neighbour steps, while without tiling it is clearly larger.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from tether_server import controlnet, seamless
from tether_server.engine import ControlInput, Engine, Job

AXES = {"x": (3,), "y": (2,), "xy": (2, 3)}


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(1, 4, 16, 16, generator=generator),
        "context": torch.randn(1, 77, 32, generator=generator),
        "image": torch.rand(1, 3, 128, 128, generator=generator),
        "t": torch.tensor(500),
    }


def networks(models, inputs):
    """Each network as a function of its spatial input, and how far a roll of that input
    must go (in its pixels) for the output to roll by `shift` of its own pixels."""
    latents, context, t = inputs["latents"], inputs["context"], inputs["t"]
    net = models.controls["depth"].model

    def unet(x):
        return models.unet(x, t, encoder_hidden_states=context, return_dict=False)[0]

    def control(image):
        # The hint is made from the image under the same padding; so are the latents (an
        # 8x8 average), so that rolling the image rolls both of the ControlNet's inputs.
        pooled = torch.nn.functional.avg_pool2d(image, 8)
        sample = torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1) * 2 - 1
        hint = net.controlnet_cond_embedding(image)
        down, _ = controlnet.forward(net, sample, t, context, hint)
        return down[0]

    def decode(x):
        return models.vae.decode(x, return_dict=False)[0]

    def encode(image):
        return models.vae.encode(image).latent_dist.mean

    return {
        # name: (function, input, input shift, output shift)
        "unet": (unet, latents, 4, 4),
        "controlnet": (control, inputs["image"], 32, 4),
        "vae decoder": (decode, latents, 2, 16),
        "vae encoder": (encode, inputs["image"], 16, 2),
    }


def roll_error(function, x, shift_in, shift_out, dims) -> float:
    """How far function(roll(x)) is from roll(function(x)) along `dims`."""
    rolled_first = function(torch.roll(x, [shift_in] * len(dims), dims=dims))
    rolled_after = torch.roll(function(x), [shift_out] * len(dims), dims=dims)
    return (rolled_first - rolled_after).abs().max().item()


@pytest.mark.parametrize("name", ["unet", "controlnet", "vae decoder", "vae encoder"])
@pytest.mark.parametrize("tiling", ["x", "y", "xy"])
@torch.inference_mode()
def test_wrapped_networks_commute_with_rolling_on_the_wrapped_axes(
    seeing_models, inputs, name, tiling
):
    """The test that can fail: zero padding (untiled, or the other axis) breaks it, by at
    least 100 times the float error of a wrapped axis."""
    function, x, shift_in, shift_out = networks(seeing_models, inputs)[name]
    models = seeing_models.modules()
    with seamless.wrapped(models, tiling):
        for axis, dims in (("x", (3,)), ("y", (2,))):
            error = roll_error(function, x, shift_in, shift_out, dims)
            if axis in tiling:
                assert error < 1e-4, f"{name} does not wrap along {axis}: {error}"
            else:
                assert error > 1e-2, f"{name} wraps along {axis} too: {error}"
    assert roll_error(function, x, shift_in, shift_out, AXES[tiling]) > 1e-2  # restored


@torch.inference_mode()
def test_xy_is_a1111s_circular_padding_mode_bit_for_bit(seeing_models, inputs):
    latents, context, t = inputs["latents"], inputs["context"], inputs["t"]
    reference = copy.deepcopy(seeing_models.unet)
    for layer in reference.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.padding_mode = "circular"
    plain = seeing_models.unet(latents, t, encoder_hidden_states=context).sample
    with seamless.wrapped([seeing_models.unet], "xy"):
        wrapped = seeing_models.unet(latents, t, encoder_hidden_states=context).sample
    circular = reference(latents, t, encoder_hidden_states=context).sample
    assert torch.equal(wrapped, circular)
    assert (wrapped - plain).abs().max() > 0.1


@torch.inference_mode()
def test_the_models_are_restored_exactly(seeing_models, inputs):
    latents, context, t = inputs["latents"], inputs["context"], inputs["t"]
    before = seeing_models.unet(latents, t, encoder_hidden_states=context).sample
    with pytest.raises(RuntimeError), seamless.wrapped(seeing_models.modules(), "xy"):
        assert any("forward" in vars(layer) for layer in seeing_models.unet.modules())
        raise RuntimeError("a run that fails still restores the models")
    assert not any(
        "forward" in vars(layer) for m in seeing_models.modules() for layer in m.modules()
    )
    after = seeing_models.unet(latents, t, encoder_hidden_states=context).sample
    assert torch.equal(before, after)


SIZE = 128


def tileable(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A normal map (normalbae colours) and a colour image, both periodic over the image."""
    y, x = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    nx, ny = 0.4 * np.cos(2 * x), 0.4 * np.sin(3 * y)
    nz = np.sqrt(1 - nx**2 - ny**2)
    normals = np.stack([(1 - nx) / 2, (1 + ny) / 2, (1 + nz) / 2], axis=2)
    colour = np.stack(
        [0.5 + 0.3 * np.sin(x + y), 0.5 + 0.3 * np.cos(2 * x), 0.5 + 0.3 * np.sin(y)], 2
    )
    return normals.astype(np.float32), colour.astype(np.float32)


def wrap_step(image: np.ndarray, axis: int) -> tuple[float, float]:
    """(the mean step across the wrap edge, the 95th percentile of the interior steps) along
    `axis` (1: last column to first, 0: last row to first)."""
    steps = np.abs(image - np.roll(image, -1, axis=axis)).mean(axis=(1 - axis, 2))
    return float(steps[-1]), float(np.percentile(steps[:-1], 95))


@pytest.fixture(scope="module")
def textures(seeing_models) -> dict[str, np.ndarray]:
    """The same img2img job (a tileable normal map, a tileable start) in each tiling."""
    engine = Engine(seeing_models)
    normals, colour = tileable()
    images = {}
    for tiling in ("none", "x", "y", "xy"):
        job = Job(
            prompt="stone wall",
            seed=1,
            steps=4,
            guidance_scale=1.0,
            width=SIZE,
            height=SIZE,
            init_image=colour,
            strength=0.3,
            controls=[ControlInput("normal", normals)],
            tiling=tiling,
        )
        engine.check(job)
        images[tiling] = engine.run([job])[0].image
    return images


@pytest.mark.parametrize("tiling", ["x", "y", "xy"])
def test_a_tileable_map_gives_a_tileable_image(textures, tiling):
    for axis, name in ((1, "x"), (0, "y")):
        step, typical = wrap_step(textures[tiling], axis)
        if name in tiling:
            assert step <= typical, f"{tiling}: a seam along {name}: {step:.4f} > {typical:.4f}"


def test_without_tiling_the_wrap_edge_is_a_seam(textures):
    """The measure can fail: untiled, the left and right edges (each zero-padded) meet with
    a step well beyond the image's own (1.5x its 95th percentile on the tiny model; its
    rows happen to show no such step)."""
    step, typical = wrap_step(textures["none"], 1)
    assert step > 1.3 * typical
    assert not np.array_equal(textures["none"], textures["xy"])


def test_tiling_is_part_of_the_batch_key(seeing_models):
    engine = Engine(seeing_models)
    job = Job(prompt="x", steps=2, guidance_scale=7.5, width=64, height=64)
    keys = {engine.batch_key(dataclasses.replace(job, tiling=t)) for t in seamless.TILINGS}
    assert len(keys) == 4
