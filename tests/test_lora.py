"""LoRAs against diffusers' own `load_lora_weights` + `set_adapters` on
StableDiffusionControlNetPipeline: diffusers- and kohya-format files, weights 0.5 and 1,
two at once, UNet and text encoder. Reached tolerance: bit-exact (max difference 0.0) on
CPU float32; the test allows 1/255."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from lora_files import random_lora, save_diffusers, save_kohya
from tether_server import models, schedulers
from tether_server.catalog import Catalog, LoraFile
from tether_server.engine import ControlInput, Engine, Job
from tether_server.errors import InvalidArgument, NotFound
from tether_server.lora import Loras, LoraWeight

SIZE = 64
STEPS = 4
PROMPT = "a lighthouse on a cliff"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """ "a" in both formats (the same update), "b" in kohya's, "unet_only" without
    text-encoder weights, "broken" not a LoRA."""
    folder = tmp_path_factory.mktemp("loras")
    layout = models.tiny()
    a, b = random_lora(layout, 1), random_lora(layout, 2)
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    return {
        "a": save_diffusers(a, folder / "a.safetensors"),
        "a_kohya": save_kohya(a, folder / "a_kohya.safetensors"),
        "b": save_kohya(b, folder / "b.safetensors"),
        "unet_only": save_diffusers(
            random_lora(layout, 3, text_encoder=False), folder / "unet_only.safetensors"
        ),
        "broken": folder / "broken.safetensors",
    }


@pytest.fixture(scope="module")
def engine(files) -> Engine:
    catalog = Catalog(loras={name: LoraFile(name, path) for name, path in files.items()})
    return Engine(models.tiny(), catalog=catalog)


@pytest.fixture(scope="module")
def control_map() -> np.ndarray:
    return np.random.default_rng(3).random((SIZE, SIZE, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def no_lora(engine, control_map) -> np.ndarray:
    """The image before any LoRA was loaded."""
    return run(engine, control_map, [])


def run(engine: Engine, control_map: np.ndarray, loras: list[LoraWeight]) -> np.ndarray:
    job = Job(
        prompt=PROMPT,
        negative_prompt="blurry",
        loras=loras,
        seed=5,
        steps=STEPS,
        guidance_scale=7.5,
        width=SIZE,
        height=SIZE,
        controls=[ControlInput("canny", control_map)],
    )
    engine.check(job)
    return engine.run([job])[0].image


@pytest.fixture
def diffusers_image(files, control_map, monkeypatch):
    """diffusers' pipeline on a fresh copy of the tiny model with `loras` loaded its way.

    diffusers loads text-encoder LoRAs through transformers' `load_adapter`, which in
    transformers 5 asks for peft >= 0.22; the package index has 0.21.2, on which that code
    runs unchanged. The reference lifts that one version floor to run diffusers' own path.
    """
    monkeypatch.setattr("transformers.integrations.peft.MIN_PEFT_VERSION", "0.21.0")

    def image(loras: list[LoraWeight]) -> np.ndarray:
        fresh = models.tiny()
        pipe = StableDiffusionControlNetPipeline(
            vae=fresh.vae,
            text_encoder=fresh.text_encoder,
            tokenizer=fresh.tokenizer,
            unet=fresh.unet,
            controlnet=fresh.controls["canny"].model,
            scheduler=schedulers.create(schedulers.DEFAULT_SCHEDULER, fresh.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        for lora in loras:
            pipe.load_lora_weights(str(files[lora.name]), adapter_name=lora.name)
        pipe.set_adapters([lora.name for lora in loras], [lora.weight for lora in loras])
        return pipe(
            prompt=PROMPT,
            negative_prompt="blurry",
            image=torch.from_numpy(control_map).permute(2, 0, 1)[None],
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
            generator=torch.Generator("cpu").manual_seed(5),
            output_type="np",
        ).images[0]

    return image


CASES = {
    "diffusers format, 1.0": [LoraWeight("a", 1.0)],
    "diffusers format, 0.5": [LoraWeight("a", 0.5)],
    "kohya format, 1.0": [LoraWeight("a_kohya", 1.0)],
    "kohya format, 0.5": [LoraWeight("a_kohya", 0.5)],
    "two at once": [LoraWeight("a", 0.5), LoraWeight("b", 1.0)],
    "UNet only": [LoraWeight("unet_only", 0.8)],
}


@pytest.mark.parametrize("loras", CASES.values(), ids=CASES.keys())
@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # diffusers' second adapter
def test_loras_match_diffusers(engine, control_map, no_lora, diffusers_image, loras):
    ours = run(engine, control_map, loras)
    theirs = diffusers_image(loras)
    assert np.abs(ours - theirs).max() <= 1 / 255
    # The LoRA changes the image: a LoRA left out would fail the comparison above.
    assert np.abs(ours - no_lora).max() > 0.05


def unet_and_text(
    engine: Engine, loras: list[LoraWeight], active: Loras | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One UNet call and the prompt's encoding under `loras` (made active by `active`, by
    default the engine's): cheaper than an image."""
    models_ = engine.models
    active = active or engine.loras(models_)
    with torch.inference_mode():
        active.activate(loras)
        encoder = engine.prompts(models_.name)
        text = encoder.batch(models_.text_encoder, [PROMPT], None, active.text_encoder_key)
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
        noise = models_.unet(latents, 500, encoder_hidden_states=text, return_dict=False)[0]
    return noise, text


def test_a_lora_set_s_first_tiled_run_wraps_like_the_next(files, control_map):
    """A LoRA's first use adds layers (convolutions among them): they wrap for seamless
    tiling in that very run, so it gives the image every later run gives."""
    catalog = Catalog(loras={"a": LoraFile("a", files["a"])})
    engine = Engine(models.tiny(), catalog=catalog)

    def tiled() -> np.ndarray:
        job = Job(
            prompt=PROMPT,
            loras=[LoraWeight("a")],
            seed=5,
            steps=2,
            guidance_scale=7.5,
            width=SIZE,
            height=SIZE,
            tiling="x",
            controls=[ControlInput("canny", control_map)],
        )
        engine.check(job)
        return engine.run([job])[0].image

    assert np.array_equal(tiled(), tiled())


def test_kohya_and_diffusers_files_hold_the_same_update(engine):
    """The same layers saved in both formats (kohya's with alpha = rank / 2): the kohya
    file's names and alphas are read, not skipped."""
    diffusers = unet_and_text(engine, [LoraWeight("a", 0.7)])
    kohya = unet_and_text(engine, [LoraWeight("a_kohya", 0.7)])
    plain = unet_and_text(engine, [])
    for ours, theirs, without in zip(diffusers, kohya, plain):
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert (ours - without).abs().max() > 0.05


def test_text_encoder_weights_are_applied_where_the_file_has_them(engine):
    _, plain = unet_and_text(engine, [])
    _, with_text = unet_and_text(engine, [LoraWeight("a")])
    assert engine.loras(engine.models).text_encoder_key == (LoraWeight("a"),)
    _, unet_only = unet_and_text(engine, [LoraWeight("unet_only")])
    assert engine.loras(engine.models).text_encoder_key == ()
    assert not torch.equal(with_text, plain)
    assert torch.equal(unet_only, plain)


def test_switching_sets_and_back(engine, control_map, no_lora):
    """Without LoRAs, the image is bit-exact again; the same set again, the same image."""
    first = run(engine, control_map, [LoraWeight("a", 0.5), LoraWeight("b", 1.0)])
    assert np.array_equal(run(engine, control_map, []), no_lora)
    run(engine, control_map, [LoraWeight("unet_only", 1.0)])
    again = run(engine, control_map, [LoraWeight("b", 1.0), LoraWeight("a", 0.5)])
    assert np.array_equal(first, again)


def test_a_file_that_is_no_lora_is_refused_and_the_engine_goes_on(engine, control_map):
    with pytest.raises(InvalidArgument, match="cannot load the LoRA 'broken'"):
        run(engine, control_map, [LoraWeight("broken")])
    run(engine, control_map, [LoraWeight("a")])


def test_least_recently_used_loras_are_unloaded(tmp_path):
    layout = models.tiny()
    files = {
        f"l{i}": LoraFile(
            f"l{i}", save_diffusers(random_lora(layout, 10 + i), tmp_path / f"l{i}.safetensors")
        )
        for i in range(3)
    }
    engine = Engine(models.tiny(), catalog=Catalog(loras=files))
    kept = Loras(engine.models, files, kept=2)
    first = unet_and_text(engine, [LoraWeight("l0")], kept)
    unet_and_text(engine, [LoraWeight("l1")], kept)
    unet_and_text(engine, [LoraWeight("l2")], kept)
    assert len(engine.models.unet.peft_config) == 2  # l0's layers are gone
    again = unet_and_text(engine, [LoraWeight("l0")], kept)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize(
    ("loras", "error", "message"),
    [
        ([LoraWeight("missing")], NotFound, r"loras\[0\]: no LoRA 'missing'; this server has a, "),
        ([LoraWeight("a", 10.5)], InvalidArgument, r"loras\[0\]: weight must be -10 to 10"),
        ([LoraWeight("a", float("nan"))], InvalidArgument, r"loras\[0\]: weight"),
        ([LoraWeight("a"), LoraWeight("a")], InvalidArgument, r"loras\[1\]: names the LoRA 'a'"),
        ([LoraWeight("a")] * 9, InvalidArgument, "loras: at most 8 LoRAs per job"),
        (
            [LoraWeight("missing", 1.0, "<lora:missing>")],
            NotFound,
            "prompt '<lora:missing>': no LoRA 'missing'",
        ),
    ],
)
def test_bad_loras_are_refused_naming_the_field(engine, loras, error, message):
    job = Job(prompt="x", loras=loras, steps=2, guidance_scale=7.5, width=64, height=64)
    with pytest.raises(error, match=message):
        engine.check(job)


def test_jobs_with_different_lora_sets_are_never_batched_together(engine):
    def key(*loras: LoraWeight) -> tuple:
        job = Job(prompt="x", loras=list(loras), steps=2, guidance_scale=7.5, width=64, height=64)
        return engine.batch_key(job)

    assert key(LoraWeight("a", 0.5), LoraWeight("b")) == key(LoraWeight("b"), LoraWeight("a", 0.5))
    assert key(LoraWeight("a", 0.5, "<lora:a:0.5>")) == key(LoraWeight("a", 0.5))
    assert len({key(), key(LoraWeight("a")), key(LoraWeight("a", 0.5)), key(LoraWeight("b"))}) == 4
