"""Catalog entries -> modules on the device, through diffusers' own loaders, safetensors only.

- A single .safetensors checkpoint (A1111, ComfyUI, model-sharing sites) goes through
  diffusers' single-file loaders, component by component as its pipelines'
  `from_single_file` does (`UNet2DConditionModel.from_single_file`, ...), with the entry's
  diffusers-format configs (SD 1.5's ship in configs/sd15) and `local_files_only=True`:
  nothing is fetched. (Importing the pipeline classes themselves would make transformers
  warn about image processors the server does not use.)
- A diffusers folder or a hub id goes through `from_pretrained(use_safetensors=True)`.

Failures are ModelConfigError, one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    SingleFileComponentError,
    create_diffusers_clip_model_from_ldm,
    load_single_file_checkpoint,
)
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from .catalog import BaseEntry, ControlEntry
from .errors import ModelConfigError
from .models import ControlNet, ModelSet

# What diffusers raises for a file or folder it cannot load.
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError)


def load_base(
    entry: BaseEntry,
    controls: dict[str, ControlNet],
    device: str | torch.device,
    dtype: torch.dtype,
) -> ModelSet:
    """The base model `entry` as a ModelSet on `device`, sharing `controls` (the server's
    loaded ControlNets, filled as they load)."""
    # A server's log is no terminal: no progress bars.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    vae = _vae(entry, dtype) if entry.vae is not None else None
    if entry.path is not None and entry.path.is_file():
        parts = _single_file_parts(entry, vae, dtype)
    else:
        parts = _pretrained_parts(entry, vae, dtype)
    models = ModelSet(name=entry.name, controls=controls, family=entry.family, **parts)
    for module in models.modules():
        module.eval().requires_grad_(False)
    return models.to(device, dtype)


def load_control(entry: ControlEntry, device: str | torch.device, dtype: torch.dtype) -> ControlNet:
    """The ControlNet `entry` on `device`."""
    diffusers_logging.disable_progress_bar()
    if entry.path is not None and entry.path.is_file():
        net = _single_file(
            ControlNetModel.from_single_file,
            entry.path,
            "an SD 1.5 ControlNet",
            config=entry.config,
            dtype=dtype,
        )
    else:
        net = _pretrained(ControlNetModel, _where(entry), None, dtype)
    net.eval().requires_grad_(False)
    return ControlNet(entry.name, entry.kind, net.to(device=device))


def load_text_side(entry: BaseEntry) -> tuple[CLIPTokenizer, int]:
    """The tokenizer of the base model `entry` and its text encoder's width, from its
    configs alone (no weights): what checking a prompt needs before the model loads."""
    single_file = entry.path is not None and entry.path.is_file()
    where = str(entry.config) if single_file else _where(entry)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer")
        width = CLIPTextConfig.from_pretrained(where, subfolder="text_encoder").hidden_size
    except _LOAD_ERRORS as error:
        raise ModelConfigError(f"{where}: cannot load its tokenizer: {_line(error)}") from error
    return tokenizer, width


def _single_file_parts(entry: BaseEntry, vae: AutoencoderKL | None, dtype: torch.dtype) -> dict:
    path, config, what = entry.path, str(entry.config), "an SD 1.5 checkpoint"
    # Read once; every component takes its tensors from it, as the pipelines' loader does.
    checkpoint = _guarded(path, what, load_single_file_checkpoint, str(path), local_files_only=True)
    options = {"config": config, "local_files_only": True, "torch_dtype": dtype}

    def part(cls, subfolder: str):
        return _guarded(
            path, what, cls.from_single_file, checkpoint, subfolder=subfolder, **options
        )

    text_encoder = _guarded(
        path,
        what,
        create_diffusers_clip_model_from_ldm,
        CLIPTextModel,
        checkpoint,
        subfolder="text_encoder",
        **options,
    )
    return {
        "unet": part(UNet2DConditionModel, "unet"),
        "vae": vae or part(AutoencoderKL, "vae"),
        "text_encoder": text_encoder,
        "tokenizer": _guarded(
            path, what, CLIPTokenizer.from_pretrained, config, subfolder="tokenizer"
        ),
        "scheduler_config": dict(DDIMScheduler.load_config(config, subfolder="scheduler")),
    }


def _pretrained_parts(entry: BaseEntry, vae: AutoencoderKL | None, dtype: torch.dtype) -> dict:
    where = _where(entry)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer")
        scheduler_config = dict(DDIMScheduler.load_config(where, subfolder="scheduler"))
    except _LOAD_ERRORS as error:
        message = f"{where}: cannot load its tokenizer or scheduler: {_line(error)}"
        raise ModelConfigError(message) from error
    return {
        "unet": _pretrained(UNet2DConditionModel, where, "unet", dtype),
        "vae": vae or _pretrained(AutoencoderKL, where, "vae", dtype),
        "text_encoder": _pretrained(CLIPTextModel, where, "text_encoder", dtype),
        "tokenizer": tokenizer,
        "scheduler_config": scheduler_config,
    }


def _vae(entry: BaseEntry, dtype: torch.dtype) -> AutoencoderKL:
    """The entry's own VAE; a single file is built from the base model's VAE config."""
    if entry.vae.is_dir():
        return _pretrained(AutoencoderKL, str(entry.vae), None, dtype)
    own_configs = entry.path if entry.path is not None and entry.path.is_dir() else entry.config
    return _single_file(
        AutoencoderKL.from_single_file,
        entry.vae,
        "a VAE",
        config=own_configs,
        dtype=dtype,
        subfolder="vae",
    )


def _single_file(load, path: Path, what: str, *, config: Path, dtype: torch.dtype, **kwargs):
    """diffusers' single-file loader `load` on `path`, with local configs only."""
    options = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    return _guarded(path, what, load, str(path), **options, **kwargs)


def _guarded(path: Path, what: str, load, *args, **kwargs):
    """load(*args, **kwargs), a failure worded as one line naming `path`."""
    try:
        return load(*args, **kwargs)
    except _LOAD_ERRORS as error:
        reason = _line(error)
        if "meta tensor" in reason:
            # diffusers builds the modules without weights and fills them from the file; one
            # the file lacks stays empty, and moving it to the dtype fails.
            reason = (
                "weights are missing (is the file complete, and of the model its config describes?)"
            )
        raise ModelConfigError(f"{path}: cannot load it as {what}: {reason}") from error


def _pretrained(cls, where: str, subfolder: str | None, dtype: torch.dtype):
    kwargs = {"subfolder": subfolder} if subfolder else {}
    try:
        return cls.from_pretrained(where, use_safetensors=True, torch_dtype=dtype, **kwargs)
    except _LOAD_ERRORS as error:
        at = f"{where}/{subfolder}" if subfolder else where
        raise ModelConfigError(f"{at}: cannot load {cls.__name__}: {_line(error)}") from error


def _where(entry: BaseEntry | ControlEntry) -> str:
    """A local folder or a hub id, as from_pretrained takes it."""
    return str(entry.path) if entry.path is not None else entry.hub


def _line(error: Exception) -> str:
    """An exception's first line: diffusers' messages run over several."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
