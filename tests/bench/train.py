"""`tether train control` against a straightforward diffusers ControlNet training loop,
in the same process, on the same model, scenes and batch.

    python tests/bench/train.py                      # embedded tiny model, CPU, 128², batch 16
    python tests/bench/train.py --steps 60 --batch 32 --threads 2

The diffusers loop is the one of diffusers' examples/controlnet/train_controlnet.py
without accelerate: per step, encode the pixels with the autoencoder
(`latent_dist.sample() * scaling_factor`), encode the captions, add noise at random
timesteps, run the ControlNet and the locked UNet with its residuals, MSE against the
noise, backward, clip to norm 1, AdamW step; half of the prompts empty (the example's
--proportion_empty_prompts 0.5). Its pixels and tokens are prepared before the clock
starts, which favours it.

`tether train control` runs as the command does (through `tether.cli`) with the same
options; its time is its loop's own (the loss log's seconds at the last step). The one
encoding of every image it does before the loop is reported apart (`tether_encode_s`),
with the scene renderer's speed (`scenes_per_minute`).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDPMScheduler
from tether.cli import main as tether_main
from tether_server import models
from tether_server.train import architecture, data


def diffusers_loop(model_set, examples, args) -> float:
    """Seconds for `args.steps` steps of diffusers' example loop."""
    controlnet = ControlNetModel.from_unet(
        model_set.unet, conditioning_embedding_out_channels=architecture.HINT_CHANNELS
    )
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=args.lr)
    noise_scheduler = DDPMScheduler.from_config(model_set.scheduler_config)
    pixels = data.to_tensor(list(examples.images), torch.device("cpu"))
    conditions = torch.from_numpy(np.stack(list(examples.conditions))).permute(0, 3, 1, 2)
    tokenizer = model_set.tokenizer

    def tokens(captions):
        return tokenizer(
            captions,
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids

    ids, empty = tokens(examples.captions), tokens([""])[0]
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(args.steps):
        index = rng.choice(len(examples), args.batch)
        input_ids = ids[index].clone()
        input_ids[rng.random(args.batch) < 0.5] = empty
        with torch.no_grad():
            latents = model_set.vae.encode(pixels[index]).latent_dist.sample()
            latents = latents * model_set.vae.config.scaling_factor
            encoder_hidden_states = model_set.text_encoder(input_ids, return_dict=False)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch,))
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        down, mid = controlnet(
            noisy,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            controlnet_cond=conditions[index],
            return_dict=False,
        )
        model_pred = model_set.unet(
            noisy,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
        loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def tether_loop(args, folder: Path) -> float:
    """Seconds of `tether train control`'s own loop for `args.steps` steps."""
    command = ["train", "control", "--kind", "depth", "--out", str(folder / "unit")]
    command += ["--scenes", str(args.scenes), "--steps", str(args.steps)]
    command += ["--batch", str(args.batch), "--lr", str(args.lr), "--size", str(args.size)]
    command += ["--hint-channels", ",".join(map(str, architecture.HINT_CHANNELS))]
    command += ["--threads", str(args.threads), "--checkpoint-every", str(args.steps)]
    if tether_main(command) != 0:
        raise SystemExit("tether train control failed")
    log = (folder / "unit" / "checkpoints" / "control.log.jsonl").read_text().splitlines()
    return json.loads(log[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="training size")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    examples = data.from_scenes(args.scenes, args.size, "depth")
    scenes_per_minute = 60 * args.scenes / (time.perf_counter() - started)
    model_set = models.tiny()
    started = time.perf_counter()
    data.encode(model_set.vae, examples.images)
    encode_s = time.perf_counter() - started

    diffusers_s = diffusers_loop(model_set, examples, args)
    with tempfile.TemporaryDirectory() as folder:
        tether_s = tether_loop(args, Path(folder))
    samples = args.steps * args.batch
    result = {
        "model": "tiny",
        "device": "cpu",
        "threads": args.threads,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "tether_samples_per_s": round(samples / tether_s, 2),
        "diffusers_samples_per_s": round(samples / diffusers_s, 2),
        "ratio": round(diffusers_s / tether_s, 3),
        "tether_encode_s": round(encode_s, 2),
        "encoded_images": args.scenes,
        "scenes_per_minute": round(scenes_per_minute),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
