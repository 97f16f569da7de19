"""What switching LoRA sets costs the engine, against one denoising step, in one process.

    python tests/bench/lora.py                   # tiny model, CPU
    python tests/bench/lora.py --full-size --size 512 --rank 32 --device cuda --dtype float16

Prints one JSON object; times in ms, medians of --repeats.
- `step_ms`: one denoising step (UNet under classifier-free guidance, batch 2), no LoRA;
  `step_ms_with_loras`: the same with two LoRAs active (peft's unmerged layers).
- `switch_ms`: `Loras.activate` between two sets of loaded LoRAs ({a: 0.8} and
  {a: 0.5, b: 1}); `switch_to_none_ms`: to no LoRA and back to one; `switch_vs_step`:
  switch_ms / step_ms. `diffusers_set_adapters_ms`: diffusers' `pipe.set_adapters` for the
  same change on the same model, for scale.
- `encode_ms`: a prompt encoded under a set not seen before (encodings are cached per set).
- `first_load_ms`: a LoRA's first use: the file read and its layers added (once per LoRA
  while it stays among the loaded ones); what a switch would cost if files were re-read.
The LoRAs are random, of --rank, on every attention, feed-forward and first resnet
convolution of the UNet and every linear layer of the text encoder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from engine import timed_ms
from random_models import full_size_sd15
from tether_server import models, schedulers
from tether_server.catalog import Catalog, LoraFile
from tether_server.engine import Engine, Job
from tether_server.lora import LoraWeight

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lora_files import random_lora, save_kohya  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    model_set = full_size_sd15(args.device, dtype) if args.full_size else models.tiny()
    model_set.to(args.device, dtype)
    device = model_set.device

    folder = Path(tempfile.mkdtemp())
    files = {name: LoraFile(name, folder / f"{name}.safetensors") for name in ("a", "b")}
    for seed, file in enumerate(files.values()):
        save_kohya(random_lora(model_set, seed, rank=args.rank), file.path)
    engine = Engine(model_set, catalog=Catalog(loras=files), max_pixels=args.size**2)

    def step_ms(loras: list[LoraWeight]) -> float:
        job = Job(
            prompt="a castle on a hill",
            negative_prompt="blurry",
            loras=loras,
            steps=args.steps,
            guidance_scale=7.5,
            width=args.size,
            height=args.size,
        )
        engine.run([job])  # warm-up, and the LoRAs' first use
        runs = [engine.run([job])[0].denoise_ms / args.steps for _ in range(3)]
        return statistics.median(runs)

    one = [LoraWeight("a", 0.8)]
    two = [LoraWeight("a", 0.5), LoraWeight("b", 1.0)]
    loras = engine.loras(model_set)  # the model's LoRAs, as `Engine.run` activates them
    first_load_ms = timed_ms(lambda: loras.activate(one), device)
    plain_step = step_ms([])
    lora_step = step_ms(two)

    def switches(first: list[LoraWeight], second: list[LoraWeight]) -> float:
        times = []
        for _ in range(args.repeats):
            times.append(timed_ms(lambda: loras.activate(first), device))
            times.append(timed_ms(lambda: loras.activate(second), device))
        return statistics.median(times)

    switch = switches(one, two)
    to_none = switches([], one)

    def encode() -> None:
        with torch.inference_mode():  # a LoRA key never seen before: nothing cached
            prompts = engine.prompts(model_set.name)
            prompts.batch(model_set.text_encoder, ["a castle on a hill"], ["blurry"], (object(),))

    encode_ms = statistics.median(timed_ms(encode, device) for _ in range(args.repeats))

    pipe = StableDiffusionPipeline(
        vae=model_set.vae,
        text_encoder=model_set.text_encoder,
        tokenizer=model_set.tokenizer,
        unet=model_set.unet,
        scheduler=schedulers.create("unipc", model_set.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    adapters = {name: loaded.adapter for name, loaded in loras._loaded.items()}
    sets = [
        ([adapters["a"]], [0.8]),
        ([adapters["a"], adapters["b"]], [0.5, 1.0]),
    ]
    diffusers_times = []
    with torch.inference_mode():  # as the engine: the adapters were loaded in it
        for _ in range(args.repeats):
            for names, weights in sets:
                diffusers_times.append(
                    timed_ms(lambda n=names, w=weights: pipe.set_adapters(n, w), device)
                )

    print(
        json.dumps(
            {
                "model": model_set.name,
                "device": str(device),
                "dtype": args.dtype,
                "size": args.size,
                "rank": args.rank,
                "step_ms": round(plain_step, 2),
                "step_ms_with_loras": round(lora_step, 2),
                "switch_ms": round(switch, 3),
                "switch_to_none_ms": round(to_none, 3),
                "switch_vs_step": round(switch / plain_step, 4),
                "diffusers_set_adapters_ms": round(statistics.median(diffusers_times), 3),
                "encode_ms": round(encode_ms, 2),
                "first_load_ms": round(first_load_ms, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
