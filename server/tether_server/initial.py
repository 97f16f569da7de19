"""Where the engine's denoising loop starts: the initial latents of a batch, drawn from the
jobs' generators exactly as diffusers draws them (docs/conventions.md, "Seeds"), so that a
seed gives diffusers' image. Pure noise for txt2img; the init image encoded and noised
for img2img; for inpainting also what the loop blends back outside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from .models import ModelSet


@dataclass
class Inpaint:
    """What the loop blends back outside the mask at every step."""

    mask: torch.Tensor  # (batch, 1, h, w) latent-size mask, 1 = repaint
    image_latents: torch.Tensor  # the init images, encoded
    noise: torch.Tensor  # the noise the init latents were (or would be) noised with


def latents(models: ModelSet, jobs: list, generators: list[torch.Generator], scheduler, timesteps):
    """(latents, Inpaint or None) for a batch of engine Jobs: pure noise, the noised init
    image, or for inpainting with strength 1 pure noise plus what the loop blends back."""
    device, dtype = models.device, models.dtype
    scale = models.vae.config.scaling_factor
    first = jobs[0]
    shape = (
        len(jobs),
        models.unet.config.in_channels,
        first.height // models.vae_scale_factor,
        first.width // models.vae_scale_factor,
    )
    if first.init_image is None:
        noise = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
        return noise * scheduler.init_noise_sigma, None
    # Encode one image at a time with its own generator, as diffusers does for a list of
    # generators: the posterior sample draws from the job's generator before the noise.
    init = []
    for job, generator in zip(jobs, generators):
        pixels = to_tensor(job.init_image, device, dtype) * 2 - 1
        init.append(models.vae.encode(pixels).latent_dist.sample(generator))
    init_latents = torch.cat(init) * scale
    noise = randn_tensor(init_latents.shape, generator=generators, device=device, dtype=dtype)
    start = timesteps[:1].repeat(len(jobs))
    if first.mask is None:
        return scheduler.add_noise(init_latents, noise, start), None
    # diffusers' inpaint pipeline also encodes the masked image (for 9-channel UNets);
    # its posterior sample draws from each generator. Draw the same to keep seeds equal.
    randn_tensor(init_latents.shape, generator=generators, device=device, dtype=dtype)
    if first.strength == 1.0:
        noised = noise * scheduler.init_noise_sigma
    else:
        noised = scheduler.add_noise(init_latents, noise, start)
    hard = np.stack([(job.mask >= 0.5).astype(np.float32) for job in jobs])[:, None]
    mask = torch.nn.functional.interpolate(torch.from_numpy(hard), size=shape[2:])
    return noised, Inpaint(mask.to(device=device, dtype=dtype), init_latents, noise)


def to_tensor(image: np.ndarray, device, dtype) -> torch.Tensor:
    """(H, W, 3) float32 in [0, 1] -> (1, 3, H, W), as diffusers' numpy_to_pt (init images
    here, control images in the engine)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return tensor.permute(2, 0, 1)[None].to(device=device, dtype=dtype)
