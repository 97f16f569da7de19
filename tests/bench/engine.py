"""Engine vs diffusers' StableDiffusionControlNetPipeline, same process, same components.

    python tests/bench/engine.py                      # tiny model, CPU, 256x256, 20 steps
    python tests/bench/engine.py --full-size --size 512 --device cuda --dtype float16

Prints one JSON object. Times are medians of --repeats runs after one warm-up run each.
- `plain`: 3 units on every step. Target: engine <= 1.02x diffusers.
- `windowed`: 2 of the 3 units limited to the first half of the steps. diffusers still runs
  them (at weight 0); the engine skips them. Target: clearly faster than diffusers.
- `batch4`: 4 compatible jobs through one loop vs the same 4 one after another.
- `preview_fast`: cost of a fast preview every step, as a share of the step time.
`--full-size` builds SD 1.5's architecture with random weights (speed does not depend on
weights); the default is the embedded tiny model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    UNet2DConditionModel,
)
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from tether_server import models, schedulers
from tether_server.engine import ControlInput, Engine, Job
from transformers import CLIPTextConfig, CLIPTextModel

UNITS = ("canny", "depth", "normal")


def full_size_sd15(device: str, dtype: torch.dtype) -> models.ModelSet:
    """SD 1.5's architecture (UNet 860M, ControlNet 361M, VAE, CLIP-L) with random weights."""
    tiny = models.tiny()
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
        controls = {
            name: models.ControlNet(name, name, ControlNetModel(cross_attention_dim=768))
            for name in UNITS
        }
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                eos_token_id=tiny.tokenizer.eos_token_id,
            )
        )
    full = models.ModelSet(
        name="sd15-random",
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny.tokenizer,
        scheduler_config=tiny.scheduler_config,
        controls=controls,
    )
    for module in full.modules():
        module.eval().requires_grad_(False)
    return full.to(device, dtype)


def median_time(run, repeats: int, device: torch.device) -> float:
    run()  # warm-up: kernels, allocator, caches
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.device == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    model_set = full_size_sd15(args.device, dtype) if args.full_size else models.tiny()
    model_set.to(args.device, dtype)
    device = model_set.device
    engine = Engine(model_set, max_pixels=args.size * args.size)
    rng = np.random.default_rng(0)
    maps = [rng.random((args.size, args.size, 3), dtype=np.float32) for _ in UNITS]
    pipe = StableDiffusionControlNetPipeline(
        vae=model_set.vae,
        text_encoder=model_set.text_encoder,
        tokenizer=model_set.tokenizer,
        unet=model_set.unet,
        controlnet=MultiControlNetModel([model_set.controls[n].model for n in UNITS]),
        scheduler=schedulers.create("unipc", model_set.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    control_tensors = [torch.from_numpy(m).permute(2, 0, 1)[None] for m in maps]

    def diffusers_run(ends):
        return pipe(
            prompt="a castle on a hill",
            negative_prompt="blurry",
            image=control_tensors,
            num_inference_steps=args.steps,
            height=args.size,
            width=args.size,
            generator=torch.Generator("cpu").manual_seed(0),
            controlnet_conditioning_scale=[1.0, 0.8, 0.6],
            control_guidance_start=[0.0, 0.0, 0.0],
            control_guidance_end=ends,
            output_type="np",
        ).images[0]

    def job(ends, seed=0, preview="none") -> Job:
        return Job(
            prompt="a castle on a hill",
            negative_prompt="blurry",
            seed=seed,
            steps=args.steps,
            guidance_scale=7.5,  # diffusers' default, as the pipeline runs
            width=args.size,
            height=args.size,
            controls=[
                ControlInput(n, m, w, 0.0, e)
                for n, m, w, e in zip(UNITS, maps, [1.0, 0.8, 0.6], ends)
            ],
            preview=preview,
            on_progress=(lambda *_: None) if preview != "none" else None,
        )

    every_step, half = [1.0, 1.0, 1.0], [1.0, 0.5, 0.5]
    # Same image as diffusers? (bit-exact in float32; fp16 rounds per-unit weights apart)
    results = {
        "max_abs_diff_vs_diffusers": {
            name: float(np.abs(engine.run([job(e)])[0].image - diffusers_run(e)).max())
            for name, e in (("plain", every_step), ("windowed", half))
        }
    }
    for name, ends in (("plain", every_step), ("windowed", half)):
        reference = median_time(lambda e=ends: diffusers_run(e), args.repeats, device)
        ours = median_time(lambda e=ends: engine.run([job(e)]), args.repeats, device)
        results[name] = {
            "diffusers_s": round(reference, 4),
            "engine_s": round(ours, 4),
            "engine_over_diffusers": round(ours / reference, 4),
        }
    one_by_one = median_time(
        lambda: [engine.run([job(every_step, seed=k)]) for k in range(4)], args.repeats, device
    )
    batched = median_time(
        lambda: engine.run([job(every_step, seed=k) for k in range(4)]), args.repeats, device
    )
    results["batch4"] = {
        "sequential_s": round(one_by_one, 4),
        "batched_s": round(batched, 4),
        "throughput_gain": round(one_by_one / batched, 4),
    }
    plain = results["plain"]["engine_s"]
    previewed = median_time(
        lambda: engine.run([job(every_step, preview="fast")]), args.repeats, device
    )
    results["preview_fast"] = {
        "engine_s": round(previewed, 4),
        "share_of_step_time": round((previewed - plain) / plain, 4),
    }
    print(
        json.dumps(
            {
                "benchmark": "engine",
                "model": model_set.name,
                "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "dtype": args.dtype,
                "size": args.size,
                "steps": args.steps,
                "units": len(UNITS),
                "repeats": args.repeats,
                "torch": torch.__version__,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
