"""A models file of the tiny model for the real-Krita tests, as a user's `tether serve
--models FILE` names one: the base model as a diffusers folder, its canny ControlNet and
one LoRA ("detail"), so that the docker has a LoRA to offer and a repaint one to apply."""

from __future__ import annotations

from pathlib import Path

import model_files
from lora_files import random_lora, save_diffusers
from tether_server import models

LORA = "detail"


def write_catalog(folder: Path) -> Path:
    """Write the files under `folder`; returns the models file."""
    layout = models.tiny()
    model_files.diffusers_folder(layout, folder / "tiny")
    layout.controls["canny"].model.save_pretrained(folder / "edges")
    save_diffusers(random_lora(layout, 1), folder / f"{LORA}.safetensors")
    toml = folder / "models.toml"
    toml.write_text(
        '[models.tiny]\npath = "tiny"\n'
        '[controls.edges]\npath = "edges"\nkind = "canny"\n'
        f'[loras.{LORA}]\npath = "{LORA}.safetensors"\n'
    )
    return toml
