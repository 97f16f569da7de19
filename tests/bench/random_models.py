"""SD-1.5-shaped model sets with random weights, for benchmarks and tests.

- `full_size_sd15`: SD 1.5's architecture (UNet 860M, ControlNets 361M each, VAE, CLIP-L);
  speed does not depend on weights.
- `random_taesd`: a tiny autoencoder, full-size (TAESD's own architecture) or test-sized.
- `save`: a model set written as diffusers folders plus the TOML that `tether serve
  --models` reads, so that a benchmark can serve it through a real server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import model_files  # noqa: E402
from tether_server import models  # noqa: E402

UNITS = ("canny", "depth", "normal")


def full_size_sd15(device: str, dtype: torch.dtype, taesd: bool = False) -> models.ModelSet:
    """SD 1.5's architecture with random weights, ControlNets canny, depth and normal."""
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
        taesd=random_taesd(full_size=True) if taesd else None,
    )
    for module in full.modules():
        module.eval().requires_grad_(False)
    return full.to(device, dtype)


def random_taesd(full_size: bool, seed: int = 0) -> AutoencoderTiny:
    """TAESD's architecture (diffusers' AutoencoderTiny defaults), or a test-sized one with
    the same 8x scale and 4 latent channels. Same seed, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if full_size:
            taesd = AutoencoderTiny()
        else:
            taesd = AutoencoderTiny(
                encoder_block_out_channels=(8, 8, 8, 8),
                decoder_block_out_channels=(8, 8, 8, 8),
                num_encoder_blocks=(1, 1, 1, 1),
                num_decoder_blocks=(1, 1, 1, 1),
            )
    return taesd.eval().requires_grad_(False)


def save(model_set: models.ModelSet, folder: Path) -> Path:
    """`model_set` written under `folder` (diffusers folders, its dtype) with the models
    TOML that `tether serve --models` reads; returns the TOML's path."""
    model_files.diffusers_folder(model_set, folder / "base")
    lines = [f"[models.{model_set.name}]", 'path = "base"']
    if model_set.taesd is not None:
        model_set.taesd.save_pretrained(folder / "taesd")
        lines.append('taesd = "taesd"')
    for name, control in model_set.controls.items():
        control.model.save_pretrained(folder / f"control-{name}")
        lines += [f"[controls.{name}]", f'path = "control-{name}"', f'kind = "{control.kind}"']
    toml = folder / "models.toml"
    toml.write_text("\n".join(lines) + "\n")
    return toml
