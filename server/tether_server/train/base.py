"""`tether train base`: a small SD-1.5-shaped model from random weights, on synthetic
scenes (the architecture of `architecture.py`).

1. Render scenes 0 .. N-1 (colour images and captions).
2. Autoencoder: reconstruct random 64² crops of them (it is convolutional; a crop costs a
   quarter of a whole image and teaches the same pixels).
3. Encode every scene once with it; set its scaling factor so that the latents the UNet
   sees have unit variance.
4. UNet and text encoder together: noise prediction on the latents, with 10% of the
   captions dropped to empty so that classifier-free guidance has an unconditional
   prediction to steer away from.
5. Save the model set in diffusers' layout with the models.toml that serves it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .. import saving
from . import architecture, data, loop, objectives

CROP = 64
CAPTION_DROP = 0.1


def train(args: argparse.Namespace) -> Path:
    """Returns the path of the written models.toml."""
    device = torch.device(args.device)
    model_set = architecture.random_model_set(args.seed).to(device, torch.float32)
    examples = data.from_scenes(args.scenes, architecture.SIZE)

    # 2. Autoencoder.
    vae = model_set.vae.requires_grad_(True)

    def autoencoder(rng: loop.Randomness) -> torch.Tensor:
        index = rng.numpy.choice(len(examples), args.vae_batch)
        corners = rng.numpy.integers(0, architecture.SIZE - CROP + 1, size=(args.vae_batch, 2))
        crops = [
            examples.images[i][y : y + CROP, x : x + CROP] for i, (y, x) in zip(index, corners)
        ]
        with loop.autocast(device, args.dtype):
            return objectives.autoencoder_loss(vae, data.to_tensor(crops, device), rng.torch)

    loop.run(
        loop.Phase(
            "autoencoder",
            {"vae": vae},
            args.vae_steps,
            args.vae_lr,
            checkpoint_every=args.checkpoint_every,
        ),
        autoencoder,
        args.checkpoints,
        args.seed,
        args.dtype,
    )
    vae.requires_grad_(False)

    # 3. Latents of every scene, and the scale that gives them unit variance.
    latents = data.encode(vae, examples.images)
    vae.register_to_config(scaling_factor=objectives.scaling_factor(latents.mean))

    # 4. UNet and text encoder.
    unet = model_set.unet.requires_grad_(True)
    text_encoder = model_set.text_encoder.requires_grad_(True)
    noise_scheduler = DDPMScheduler.from_config(model_set.scheduler_config)
    scale = vae.config.scaling_factor

    def diffusion(rng: loop.Randomness) -> torch.Tensor:
        index = rng.numpy.choice(len(examples), args.batch)
        drop = rng.numpy.random(args.batch) < CAPTION_DROP
        captions = ["" if d else examples.captions[i] for i, d in zip(index, drop)]
        with loop.autocast(device, args.dtype):
            embeddings = objectives.encode_prompts(model_set.tokenizer, text_encoder, captions)
            return objectives.noise_prediction_loss(
                unet,
                noise_scheduler,
                latents.sample(index, rng.torch, scale).to(device),
                embeddings,
                rng.torch,
            )

    loop.run(
        loop.Phase(
            "diffusion",
            {"unet": unet, "text_encoder": text_encoder},
            args.steps,
            args.lr,
            checkpoint_every=args.checkpoint_every,
        ),
        diffusion,
        args.checkpoints,
        args.seed,
        args.dtype,
    )
    for module in model_set.modules():
        module.requires_grad_(False)

    # 5. The model set, as a models TOML serves it.
    return saving.save(model_set, args.out, loop.DTYPES[args.save_dtype])
