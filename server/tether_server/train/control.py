"""`tether train control`: a ControlNet unit, trained the way the ControlNet paper does.

1. Load the base model (the embedded one, or a TOML file's default) and lock it: no weight
   of the autoencoder, text encoder or UNet changes.
2. Copy the UNet's encoder and middle block into a ControlNet (`ControlNetModel.from_unet`):
   a trainable copy that starts as the base's own weights, joined to the UNet through
   zero-initialised convolutions, so that before its first step it changes nothing.
3. Examples: synthetic scenes with their depth, normal or canny maps, or a folder of
   (condition, image, caption) triples (`data.from_pairs`); every image is encoded once.
4. Noise prediction with the ControlNet's residuals added to the locked UNet; half of
   the captions are dropped to empty, so that the unit learns to read its map alone.
5. Save the ControlNet (safetensors, diffusers' layout) and print the TOML entry that
   serves it; `--add` appends it to the --models file.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from diffusers import ControlNetModel, DDPMScheduler

from .. import catalog, loading, models, saving
from . import data, loop, objectives

PROMPT_DROP = 0.5


def train(args: argparse.Namespace) -> str:
    """Returns the TOML entry that serves the trained unit."""
    # 1. The locked base.
    device, dtype = torch.device(args.device), loop.DTYPES[args.dtype]
    if args.models:
        listed = catalog.read(args.models)
        if args.add and args.name in listed.controls:
            raise ValueError(
                f"--add: {args.models} already has [controls.{args.name}]; choose --name"
            )
        base = loading.load_base(listed.models[listed.default], {}, device, dtype)
    else:
        base = models.tiny().to(device, dtype)
    size = args.size or base.default_size

    # 2. The trainable copy.
    controlnet = ControlNetModel.from_unet(
        base.unet, conditioning_embedding_out_channels=tuple(args.hint_channels)
    ).to(device)  # from_unet makes float32 weights, whatever the base's dtype

    # 3. Examples and their latents.
    if args.pairs:
        examples = data.from_pairs(args.pairs, size, args.kind)
    else:
        examples = data.from_scenes(args.scenes, size, args.kind)
    latents = data.encode(base.vae, examples.images)
    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    scale = base.vae.config.scaling_factor

    # 4. Noise prediction through the locked UNet.
    def loss(rng: loop.Randomness) -> torch.Tensor:
        index = rng.numpy.choice(len(examples), args.batch)
        drop = rng.numpy.random(args.batch) < PROMPT_DROP
        captions = ["" if d else examples.captions[i] for i, d in zip(index, drop)]
        maps = np.stack([examples.conditions[i] for i in index])
        condition = torch.from_numpy(maps).permute(0, 3, 1, 2).to(device)
        with loop.autocast(device, args.dtype):
            with torch.no_grad():
                embeddings = objectives.encode_prompts(base.tokenizer, base.text_encoder, captions)
            return objectives.noise_prediction_loss(
                base.unet,
                noise_scheduler,
                latents.sample(index, rng.torch, scale).to(device, dtype),
                embeddings,
                rng.torch,
                controlnet,
                condition,
            )

    loop.run(
        loop.Phase(
            "control",
            {"controlnet": controlnet},
            args.steps,
            args.lr,
            checkpoint_every=args.checkpoint_every,
        ),
        loss,
        args.checkpoints,
        args.seed,
        args.dtype,
    )

    # 5. The unit and its entry.
    saving.save_module(controlnet, args.out, loop.DTYPES[args.save_dtype])
    return _entry(args)


def _entry(args: argparse.Namespace) -> str:
    out = args.out.resolve()
    if args.add:
        toml = args.models.resolve()
        path = out.relative_to(toml.parent) if out.is_relative_to(toml.parent) else out
        entry = saving.toml_entry(args.name, str(path), args.kind)
        with toml.open("a") as file:
            file.write("\n" + entry)
        return entry
    return saving.toml_entry(args.name, str(out), args.kind)
