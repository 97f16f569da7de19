"""The engine against diffusers' own pipelines: same components, seed and scheduler give
the same image. Reached tolerance: bit-exact (max difference 0.0) on CPU float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
)
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from tether_server import schedulers
from tether_server.engine import ControlInput, Engine, Job

SIZE = 128
STEPS = 8
SEED = 1234


@pytest.fixture(scope="module")
def engine(tiny_models) -> Engine:
    return Engine(tiny_models)


@pytest.fixture(scope="module")
def maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        name: rng.random((SIZE, SIZE, 3), dtype=np.float32) for name in ("canny", "depth", "normal")
    }


@pytest.fixture(scope="module")
def init_image() -> np.ndarray:
    return np.random.default_rng(8).random((SIZE, SIZE, 3), dtype=np.float32)


def diffusers_image(models, units, scheduler, *, guess_mode=False, init=None, strength=0.6):
    """diffusers' pipeline output (float, 0..1) for units = [(name, map, weight, start, end)]."""
    nets = [models.controls[name].model for name, *_ in units]
    multi = len(nets) > 1
    cls = (
        StableDiffusionControlNetImg2ImgPipeline
        if init is not None
        else StableDiffusionControlNetPipeline
    )
    pipe = cls(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        unet=models.unet,
        controlnet=MultiControlNetModel(nets) if multi else nets[0],
        scheduler=schedulers.create(scheduler, models.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def per_unit(values):
        return list(values) if multi else values[0]

    control = per_unit([torch.from_numpy(m).permute(2, 0, 1)[None] for _, m, *_ in units])
    images = {"image": control}
    if init is not None:
        images = {"image": torch.from_numpy(init).permute(2, 0, 1)[None], "control_image": control}
        images["strength"] = strength
    return pipe(
        prompt="a lighthouse on a cliff",
        negative_prompt="blurry",
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(SEED),
        controlnet_conditioning_scale=per_unit([w for _, _, w, _, _ in units]),
        control_guidance_start=per_unit([s for *_, s, _ in units]),
        control_guidance_end=per_unit([e for *_, e in units]),
        guess_mode=guess_mode,
        output_type="np",
        **images,
    ).images[0]


def engine_job(units, scheduler, *, mode="balanced", init=None, strength=0.6, seed=SEED) -> Job:
    return Job(
        prompt="a lighthouse on a cliff",
        negative_prompt="blurry",
        seed=seed,
        steps=STEPS,
        guidance_scale=7.5,  # diffusers' default
        width=SIZE,
        height=SIZE,
        scheduler=scheduler,
        controls=[ControlInput(n, m, w, s, e, mode) for n, m, w, s, e in units],
        init_image=init,
        strength=strength,
    )


def run_one(engine: Engine, job: Job) -> np.ndarray:
    engine.check(job)
    return engine.run([job])[0].image


CASES = {
    "one unit, unipc": (["canny"], [1.0], [0.0], [1.0], "unipc"),
    "three units, weights, unipc": (
        ["canny", "depth", "normal"],
        [1.0, 0.5, 1.5],
        [0, 0, 0],
        [1, 1, 1],
        "unipc",
    ),
    "three units, windows, euler_a": (
        ["canny", "depth", "normal"],
        [1.0, 0.5, 1.5],
        [0, 0, 0.25],
        [1, 0.5, 0.75],
        "euler_a",
    ),
    "two units, window, dpmpp_2m": (["canny", "depth"], [0.8, 1.2], [0, 0.5], [0.5, 1], "dpmpp_2m"),
    "one unit, ddim": (["depth"], [0.7], [0], [1], "ddim"),
}


@pytest.mark.parametrize("case", CASES)
def test_txt2img_matches_diffusers(engine, maps, case):
    names, weights, starts, ends, scheduler = CASES[case]
    units = [(n, maps[n], w, s, e) for n, w, s, e in zip(names, weights, starts, ends)]
    expected = diffusers_image(engine.models, units, scheduler)
    actual = run_one(engine, engine_job(units, scheduler))
    assert np.array_equal(actual, expected), np.abs(actual - expected).max()


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_guess_mode_matches_diffusers(engine, maps, scheduler):
    units = [("canny", maps["canny"], 0.9, 0, 1), ("depth", maps["depth"], 1.3, 0, 0.6)]
    expected = diffusers_image(engine.models, units, scheduler, guess_mode=True)
    actual = run_one(engine, engine_job(units, scheduler, mode="control"))
    assert np.array_equal(actual, expected), np.abs(actual - expected).max()


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])
def test_img2img_matches_diffusers(engine, maps, init_image, scheduler):
    units = [("canny", maps["canny"], 0.8, 0, 1), ("depth", maps["depth"], 1.2, 0.3, 1)]
    expected = diffusers_image(engine.models, units, scheduler, init=init_image, strength=0.6)
    actual = run_one(engine, engine_job(units, scheduler, init=init_image, strength=0.6))
    assert np.array_equal(actual, expected), np.abs(actual - expected).max()


def test_batched_job_matches_the_same_job_alone(engine, maps):
    """Jobs in one loop keep their own prompt, seed, images and weights. Tolerance 1e-4:
    convolution kernels may sum in another order for another batch size."""
    rng = np.random.default_rng(3)
    jobs = []
    for k in range(3):
        job = engine_job(
            [
                ("canny", rng.random((SIZE, SIZE, 3), dtype=np.float32), 0.5 + k * 0.4, 0, 1),
                ("depth", maps["depth"], 1.0, 0, 0.5 + k * 0.2),
            ],
            "euler_a",
            seed=SEED + k,
        )
        job.prompt = f"prompt number {k}"
        job.guidance_scale = 5.0 + k
        job.controls[1].mode = ("balanced", "prompt", "control")[k]
        jobs.append(job)
    assert len({engine.batch_key(job) for job in jobs}) == 1
    together = engine.run(jobs)
    for job, output in zip(jobs, together):
        alone = run_one(engine, job)
        assert output.batch_size == 3
        np.testing.assert_allclose(output.image, alone, atol=1e-4)
    assert not np.allclose(together[0].image, together[1].image, atol=1e-2)


def disc_mask(size: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return (((x - size * 0.6) ** 2 + (y - size * 0.4) ** 2) < (size * 0.3) ** 2).astype(np.float32)


@pytest.mark.parametrize("scheduler, strength", [("unipc", 1.0), ("euler_a", 0.7)])
def test_inpaint_matches_diffusers(engine, maps, init_image, scheduler, strength):
    """Masked latent blending as StableDiffusionControlNetInpaintPipeline (4-channel UNet).
    diffusers returns the decoded image everywhere; the engine puts the init image's own
    pixels back outside the mask, so diffusers' output is composited the same way."""
    models = engine.models
    mask = disc_mask(SIZE)
    pipe = StableDiffusionControlNetInpaintPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        unet=models.unet,
        controlnet=models.controls["canny"].model,
        scheduler=schedulers.create(scheduler, models.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        prompt="a lighthouse on a cliff",
        negative_prompt="blurry",
        image=torch.from_numpy(init_image).permute(2, 0, 1)[None],
        mask_image=torch.from_numpy(mask)[None, None],
        control_image=torch.from_numpy(maps["canny"]).permute(2, 0, 1)[None],
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(SEED),
        controlnet_conditioning_scale=0.9,
        output_type="np",
    ).images[0]
    expected = init_image * (1 - mask[:, :, None]) + reference * mask[:, :, None]
    job = engine_job(
        [("canny", maps["canny"], 0.9, 0, 1)], scheduler, init=init_image, strength=strength
    )
    job.mask = mask
    actual = run_one(engine, job)
    assert np.array_equal(actual, expected), np.abs(actual - expected).max()
    # Outside the mask: the init image, exactly.
    assert np.array_equal(actual[mask == 0], init_image[mask == 0])


CHANGES = {
    "weight": ("depth", 0.2, 0.0, 1.0, "balanced"),
    "window": ("depth", 1.5, 0.5, 1.0, "balanced"),
    "mode prompt": ("depth", 1.5, 0.0, 1.0, "prompt"),
    "mode control": ("depth", 1.5, 0.0, 1.0, "control"),
    "unit left out": None,
}


@pytest.mark.parametrize("change", CHANGES)
def test_what_parity_holds_changes_the_image(engine, maps, change):
    """The parity cases above could not fail if units changed nothing: each thing they hold
    (a unit, its weight, window and mode) must move the image on the embedded model."""

    def image(units):
        job = engine_job([], "unipc")
        job.controls = [ControlInput(name, maps[name], *rest) for name, *rest in units]
        return run_one(engine, job)

    first = ("canny", 1.0, 0.0, 1.0, "balanced")
    reference = image([first, ("depth", 1.5, 0.0, 1.0, "balanced")])
    second = CHANGES[change]
    changed = image([first] if second is None else [first, second])
    assert np.abs(changed - reference).max() > 0.02
