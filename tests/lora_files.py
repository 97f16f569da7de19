"""Test LoRA and embedding files for a model set, in the formats users have.

A LoRA here is random low-rank weights for the attention, feed-forward and convolution
layers of the UNet and the linear layers of the text encoder, saved
- in diffusers' format (peft names: `unet.<module>.lora_A.weight`, with transformers 4's
  `text_encoder.text_model.` prefix as files in the wild have it), or
- in kohya/A1111's (`lora_unet_<module>.lora_down.weight`, `lora_te_text_model_...`,
  and an `.alpha` per module: the update is scaled by alpha / rank).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
RANK = 4


def random_lora(
    models, seed: int, *, text_encoder: bool = True, scale: float = 0.3, rank: int = RANK
) -> dict:
    """{(part, module name): (down, up)} for the model set's UNet ("unet") and text encoder
    ("text_encoder"): random low-rank pairs whose update up @ down is large enough to change
    an image visibly."""
    generator = torch.Generator().manual_seed(seed)
    parts = [("unet", models.unet, UNET_TARGETS)]
    if text_encoder:
        parts.append(("text_encoder", models.text_encoder, TEXT_TARGETS))
    layers = {}
    for part, model, targets in parts:
        for name, module in model.named_modules():
            if not name.endswith(targets):
                continue
            if isinstance(module, torch.nn.Conv2d):
                down = (rank, module.in_channels, *module.kernel_size)
                up = (module.out_channels, rank, 1, 1)
            else:
                down, up = (rank, module.in_features), (module.out_features, rank)
            layers[part, name] = (
                torch.randn(down, generator=generator) * scale,
                torch.randn(up, generator=generator) * scale,
            )
    return layers


def save_diffusers(layers: dict, path: Path) -> Path:
    tensors = {}
    for (part, name), (down, up) in layers.items():
        key = f"unet.{name}" if part == "unet" else f"text_encoder.text_model.{name}"
        tensors[f"{key}.lora_A.weight"] = down.contiguous()
        tensors[f"{key}.lora_B.weight"] = up.contiguous()
    save_file(tensors, path)
    return path


def save_kohya(layers: dict, path: Path) -> Path:
    """kohya's layout, with alpha = rank / 2: the up weights are doubled, so that the file
    holds the same update as `save_diffusers` writes for the same layers."""
    tensors = {}
    for (part, name), (down, up) in layers.items():
        prefix = "lora_unet_" if part == "unet" else "lora_te_text_model_"
        key = prefix + name.replace(".", "_")
        alpha = len(down) / 2
        tensors[f"{key}.lora_down.weight"] = down.contiguous()
        tensors[f"{key}.lora_up.weight"] = (up * 2).contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, path)
    return path


def save_embedding(vectors: torch.Tensor, path: Path, layout: str) -> Path:
    """A textual-inversion file: "a1111" (`emb_params`) or "diffusers" ({token: vectors})."""
    key = "emb_params" if layout == "a1111" else f"<{path.stem}>"
    save_file({key: vectors.contiguous()}, path)
    return path
