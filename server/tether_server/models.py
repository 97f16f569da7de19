"""Model sets: one SD-1.5-shaped base model plus named ControlNets, as the engine runs them.

Two sources, one shape:
- `tiny()`: the embedded default, built in code from small configs with a fixed seed. No
  files, no downloads. It draws noise, not pictures: it exists so that every feature runs
  and is tested on a CPU through the same code path as real models.
- real models, named in a TOML file or found in a models folder (`catalog`) and loaded on
  first use (`registry`, `loading`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# SD 1.5's own scheduler settings (its scheduler/scheduler_config.json), used by the tiny
# model. Kept as the raw file's keys: a scheduler made from it takes its own defaults for
# the rest (timestep spacing, ...), exactly as when it is made from the file on disk.
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass
class ControlNet:
    """A ControlNet the server hosts, under a name clients use."""

    name: str
    kind: str
    model: ControlNetModel


@dataclass
class ModelSet:
    """Everything the engine needs for one base model and its control models."""

    name: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict
    controls: dict[str, ControlNet]
    family: str = "sd15"

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ModelSet:
        for module in self.modules():
            # diffusers warns on every dtype cast, so cast only when it changes something.
            if module.dtype != dtype:
                module.to(dtype=dtype)
            module.to(device=device)
        return self

    def modules(self) -> list[torch.nn.Module]:
        nets = [control.model for control in self.controls.values()]
        return [self.unet, self.vae, self.text_encoder, *nets]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    # fp16 halves memory and doubles tensor-core throughput on GPUs; CPUs compute fp16
    # slowly or not at all.
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


# ---------------------------------------------------------------------------------------
# The embedded tiny model


def _tiny_tokenizer() -> CLIPTokenizer:
    # Byte-level vocabulary without merges: every byte is a token, with and without the
    # end-of-word marker, then the two specials last (docs/conventions.md, "The tiny tokenizer").
    alphabet = sorted(ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        Path(folder, "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def tiny(seed: int = 0) -> ModelSet:
    """The embedded SD-1.5-shaped model: 4 latent channels, VAE factor 8, 77-token CLIP,
    ControlNets named canny, depth and normal. Same seed, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = _tiny_tokenizer()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        blocks = {
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 8,
        }
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            **blocks,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=256,
        )
        controls = {}
        for name in ("canny", "depth", "normal"):
            net = ControlNetModel(conditioning_embedding_out_channels=(8, 16, 16, 32), **blocks)
            _unzero(net)
            controls[name] = ControlNet(name, name, net)
    models = ModelSet(
        name="tiny",
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=dict(SD15_SCHEDULER_CONFIG),
        controls=controls,
    )
    for module in models.modules():
        module.eval().requires_grad_(False)
    return models


def _unzero(net: ControlNetModel) -> None:
    """Give a fresh ControlNet's zero convolutions random weights. A ControlNet starts with
    zeroed output convolutions so that training begins from the base model's behaviour; an
    untrained random unit would then change nothing, and neither would its weight, window
    or mode, so the tests could not tell them apart."""
    for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
        torch.nn.init.normal_(conv.weight, std=0.05)
        torch.nn.init.normal_(conv.bias, std=0.05)
