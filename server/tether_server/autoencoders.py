"""Latents to pixels and back: the model's VAE, its tiny autoencoder, and previews.

A model may name a tiny autoencoder (TAESD, diffusers' AutoencoderTiny: `taesd = PATH` in
its TOML entry). It encodes and decodes in a few milliseconds where the VAE takes tens, at
softer detail, in the same latent space. When the model has one:
- live frames are encoded and decoded with it (`Job.autoencoder = "tiny"`, which falls
  back to the VAE for a model without one);
- `full` previews decode the predicted clean latent with it: full-size previews every step
  at almost no cost (without one, a full preview is a VAE decode);
- Generate's final images use it only when the server runs with `--taesd-final`.
diffusers' pipelines accept an AutoencoderTiny as their `vae`, and a job with
`autoencoder = "tiny"` gives the image they give with it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

if TYPE_CHECKING:
    from .models import ModelSet

AUTOENCODERS = ("full", "tiny")

# SD 1.5 latent channels -> RGB (rows: latent channels; columns: R, G, B). ComfyUI's
# coefficients; applied to the predicted clean latent they give a 1/8-size preview for free.
LATENT_RGB = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]


def chosen(models: ModelSet, autoencoder: str) -> AutoencoderKL | AutoencoderTiny:
    """For "tiny" the model's TAESD where it has one, else its VAE."""
    return models.taesd if autoencoder == "tiny" and models.taesd is not None else models.vae


def encode(
    vae: AutoencoderKL | AutoencoderTiny, pixels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Pixels in [-1, 1] -> unscaled latents, as diffusers' retrieve_latents: the VAE's
    posterior sample draws from `generator`; TAESD's encoder is deterministic and draws
    nothing."""
    if isinstance(vae, AutoencoderTiny):
        return vae.encode(pixels).latents
    return vae.encode(pixels).latent_dist.sample(generator)


def decode(vae: AutoencoderKL | AutoencoderTiny, latents: torch.Tensor) -> list[np.ndarray]:
    """Scaled latents -> (H, W, 3) float32 images in [0, 1], as diffusers' pipelines."""
    images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    images = (images / 2 + 0.5).clamp(0, 1)
    return list(images.permute(0, 2, 3, 1).float().cpu().numpy())


def preview(models: ModelSet, x0: torch.Tensor, mode: str) -> np.ndarray:
    """A preview of the predicted clean latent `x0` (one row): "fast" through LATENT_RGB at
    1/8 size, "full" decoded by the TAESD when the model has one, else by the VAE."""
    if mode == "fast":
        rgb = torch.einsum("bchw,cr->bhwr", x0, _latent_rgb(x0.device, x0.dtype))
        return ((rgb + 1) / 2).clamp(0, 1)[0].float().cpu().numpy()
    return decode(models.taesd if models.taesd is not None else models.vae, x0)[0]


@functools.cache
def _latent_rgb(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(LATENT_RGB, device=device, dtype=dtype)
