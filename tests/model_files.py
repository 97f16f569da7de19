"""Tiny models written to disk in the layouts users have: diffusers folders, single
.safetensors files in the original SD / ControlNet key layout (with the diffusers-format
configs a tiny model needs: configs/sd15 is for real SD 1.5 checkpoints), and ComfyUI's and
A1111's models folders."""

from __future__ import annotations

import json
from pathlib import Path

import original_layout
from safetensors.torch import save_file
from tether_server.catalog import SD15_CONFIGS
from tether_server.models import ModelSet


def diffusers_folder(models: ModelSet, folder: Path) -> Path:
    """A base model as a pipeline's `save_pretrained` writes one (no ControlNets)."""
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text((SD15_CONFIGS / "model_index.json").read_text())
    models.unet.save_pretrained(folder / "unet")
    models.vae.save_pretrained(folder / "vae")
    models.text_encoder.save_pretrained(folder / "text_encoder")
    models.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "PNDMScheduler", **models.scheduler_config})
    )
    return folder


def single_file(models: ModelSet, path: Path) -> Path:
    """The base model as one checkpoint in A1111's layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(original_layout.checkpoint(models.unet, models.vae, models.text_encoder), path)
    return path


def control_file(models: ModelSet, name: str, path: Path) -> Path:
    """One of the model's ControlNets as a single file in lllyasviel's layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(original_layout.controlnet(models.controls[name].model), path)
    return path


def vae_file(models: ModelSet, path: Path) -> Path:
    """The model's VAE alone, as VAE files are shared."""
    save_file(original_layout.vae(models.vae), path)
    return path


def configs(models: ModelSet, folder: Path) -> Path:
    """The diffusers-format configs single files of this (tiny) model are built from."""
    m = models
    return original_layout.write_configs(
        folder, m.unet, m.vae, m.text_encoder, m.tokenizer, m.scheduler_config
    )


def control_config(models: ModelSet, folder: Path) -> Path:
    next(iter(models.controls.values())).model.save_config(folder)
    return folder
