"""What training minimises.

- `autoencoder_loss`: reconstruction (L1 on pixels and on their gradients, which keeps
  edges sharp), a small KL term toward the unit Gaussian, and a preview term that makes
  the scaled latents' first three directions the colours the engine's fast preview
  assumes (SD 1.5's latent-to-RGB matrix), so that previews of the tiny model show its
  picture. `scaling_factor` then scales the latents to unit variance, as SD's does.
- `noise_prediction_loss`: Stable Diffusion's objective (the ControlNet paper's eq. 1):
  the mean squared error between the noise added at a random timestep and the UNet's
  prediction of it — with a ControlNet's residuals added when one is trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..autoencoders import LATENT_RGB

KL_WEIGHT = 1e-4
EDGE_WEIGHT = 1.0
PREVIEW_WEIGHT = 0.1


def autoencoder_loss(
    vae: AutoencoderKL, pixels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """`pixels`: (B, 3, H, W) in [-1, 1]."""
    posterior = vae.encode(pixels).latent_dist
    latents = posterior.sample(generator)
    decoded = vae.decode(latents).sample
    reconstruction = F.l1_loss(decoded, pixels)
    edges = sum(F.l1_loss(torch.diff(decoded, dim=d), torch.diff(pixels, dim=d)) for d in (2, 3))
    kl = posterior.kl().mean() / latents[0].numel()
    # The fast preview maps x0, the latent scaled to unit variance, to RGB with LATENT_RGB
    # at 1/8 size; the batch's spread stands in for the scaling factor `scaling_factor`
    # sets once training is done.
    scaled = posterior.mean / posterior.mean.std().detach()
    preview = torch.einsum("bchw,cr->brhw", scaled, torch.tensor(LATENT_RGB).to(pixels))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return (
        reconstruction
        + EDGE_WEIGHT * edges
        + KL_WEIGHT * kl
        + PREVIEW_WEIGHT * F.mse_loss(preview, F.avg_pool2d(pixels, factor))
    )


def scaling_factor(latents: torch.Tensor) -> float:
    """1 / the standard deviation of the latents: Stable Diffusion's scaling factor
    (0.18215 for SD 1.5's autoencoder), which gives the UNet unit-variance latents."""
    return float(1 / latents.std())


def encode_prompts(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str]
) -> torch.Tensor:
    """Prompts -> CLIP hidden states (B, 77, dim), tokenized as diffusers' pipelines do."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def noise_prediction_loss(
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    embeddings: torch.Tensor,
    generator: torch.Generator,
    controlnet: ControlNetModel | None = None,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """`latents`: clean scaled latents (B, 4, h, w); `condition`: (B, 3, H, W) control maps
    in [0, 1], as diffusers' pipelines feed them to a ControlNet."""
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (batch,), generator=generator
    ).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    residuals = {}
    if controlnet is not None:
        down, mid = controlnet(
            noisy, timesteps, embeddings, controlnet_cond=condition, return_dict=False
        )
        residuals = {
            "down_block_additional_residuals": down,
            "mid_block_additional_residual": mid,
        }
    predicted = unet(noisy, timesteps, embeddings, **residuals).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return F.mse_loss(predicted.float(), target.float())
