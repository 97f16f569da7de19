"""Writing model sets and ControlNets in diffusers' layout, with the TOML that serves them:
what `tether train` produces, read back by the server like any local model folder.

    FOLDER/unet/, vae/, text_encoder/      config.json + safetensors (save_pretrained)
    FOLDER/tokenizer/                      vocab.json, merges.txt, tokenizer_config.json
    FOLDER/scheduler/scheduler_config.json
    FOLDER/control-NAME/                   one folder per ControlNet
    FOLDER/models.toml                     [base] path = "." and a [controls.NAME] each
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from .models import ModelSet


def save(models: ModelSet, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write `models` into `folder` (layout above), weights as safetensors in `dtype`.
    Returns the path of the models.toml."""
    folder = Path(folder)
    save_module(models.unet, folder / "unet", dtype)
    save_module(models.vae, folder / "vae", dtype)
    save_module(models.text_encoder, folder / "text_encoder", dtype)
    _save_tokenizer(models.tokenizer, folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "PNDMScheduler", **models.scheduler_config}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    entries = [f'name = "{models.name}"\n\n[base]\npath = "."\n']
    for name, control in models.controls.items():
        save_module(control.model, folder / f"control-{name}", dtype)
        entries.append(toml_entry(name, f"control-{name}", control.kind))
    toml = folder / "models.toml"
    toml.write_text("\n".join(entries))
    return toml


def save_module(module: torch.nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """save_pretrained in `dtype` (safetensors), from a copy: `module` stays as it was."""
    # torch's own `to`: diffusers' override warns on every dtype cast.
    converted = torch.nn.Module.to(copy.deepcopy(module), dtype=dtype)
    converted.save_pretrained(folder, safe_serialization=True)


def toml_entry(name: str, path: str, kind: str) -> str:
    """The `[controls.NAME]` table that serves a ControlNet folder."""
    return f'[controls.{name}]\npath = "{path}"\nkind = "{kind}"\n'


def _save_tokenizer(tokenizer: CLIPTokenizer, folder: Path) -> None:
    """vocab.json, merges.txt and tokenizer_config.json: the readable files SD 1.5's
    tokenizer folder holds and docs/conventions.md describes, instead of the tokenizers
    library's single tokenizer.json."""
    # This transformers writes only tokenizer.json (and tokenizer_config.json).
    tokenizer.save_pretrained(folder)
    bpe = json.loads((folder / "tokenizer.json").read_text())["model"]
    (folder / "vocab.json").write_text(json.dumps(bpe["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    (folder / "tokenizer.json").unlink()
