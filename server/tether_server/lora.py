"""LoRAs at run time: read on first use, kept loaded, switched between batches.

A LoRA file (kohya/A1111 or diffusers format: diffusers' `lora_state_dict` reads and
converts both) adds low-rank updates to the UNet and usually to the text encoder too.
- UNet: diffusers' own loader (`load_lora_into_unet`) adds peft layers; `set_adapters`
  picks a batch's LoRAs and weights, as in diffusers' pipelines.
- Text encoder: diffusers loads it through transformers' adapter API, which in
  transformers 5 wants peft >= 0.22 (the package index has 0.21). The same peft layers are
  added here with peft's own API (`inject_adapter_in_model`, `set_peft_model_state_dict`),
  configured as diffusers' `_load_lora_into_text_encoder` configures them, and switched
  with the diffusers helper its pipelines use. Tests hold both parts to diffusers' pipeline.
- Without LoRAs the peft layers are disabled and call the original layers alone: results
  are bit-exact with a model that never had a LoRA.
A switch sets scales on the adapter layers (tests/bench/lora.py measures it); a file is
read once and stays loaded while it is among the KEPT_LOADED most recently used.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
from diffusers.utils.peft_utils import (
    delete_adapter_layers,
    get_peft_kwargs,
    set_adapter_layers,
    set_weights_and_activate_adapters,
)
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

from .catalog import LoraFile
from .errors import NotFound, invalid, shown
from .models import ModelSet

MAX_PER_JOB = 8
MAX_WEIGHT = 10.0  # |weight|; negative weights push the other way (A1111's "sliders")
KEPT_LOADED = 16
_NAMES_SHOWN = 10  # LoRA names an error message lists


@dataclass(frozen=True)
class LoraWeight:
    """A LoRA of a job, by its catalog name."""

    name: str
    weight: float = 1.0
    # The prompt's <lora:...> tag it came from, for messages; "" for the request's `loras`.
    tag: str = field(default="", compare=False)


@dataclass
class _Loaded:
    adapter: str  # peft's name for it (catalog names may hold dots, which peft refuses)
    unet: bool  # whether the file has weights for the UNet
    text_encoder: bool  # ... and for the text encoder


def check(loras: Sequence[LoraWeight], files: dict[str, LoraFile]) -> None:
    """NotFound or InvalidArgument naming `loras[i]`, or the prompt's tag, if the job's
    LoRAs cannot run with the server's LoRA `files`."""
    if len(loras) > MAX_PER_JOB:
        raise invalid("loras", f"at most {MAX_PER_JOB} LoRAs per job (got {len(loras)})")
    seen = set()
    for i, lora in enumerate(loras):
        where = f"prompt {shown(lora.tag)}" if lora.tag else f"loras[{i}]"
        if lora.name not in files:
            names = sorted(files)
            offered = ", ".join(names[:_NAMES_SHOWN]) or "none"
            if len(names) > _NAMES_SHOWN:
                offered += f", ... ({len(names)} in all; see ListModels)"
            raise NotFound(f"{where}: no LoRA {shown(lora.name)}; this server has {offered}")
        if not (math.isfinite(lora.weight) and abs(lora.weight) <= MAX_WEIGHT):
            raise invalid(
                where, f"weight must be -{MAX_WEIGHT:g} to {MAX_WEIGHT:g} (got {lora.weight:g})"
            )
        if lora.name in seen:
            raise invalid(where, f"names the LoRA {lora.name!r} again; name each LoRA once")
        seen.add(lora.name)


class Loras:
    """The LoRAs of one loaded base model (`check` them first); `activate` runs on the
    engine's thread, which alone runs the model."""

    def __init__(
        self, models: ModelSet, files: dict[str, LoraFile], kept: int = KEPT_LOADED
    ) -> None:
        self.models = models
        self.files = files
        self.kept = kept  # at least MAX_PER_JOB
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()  # least recently used first
        self._active: tuple[LoraWeight, ...] = ()
        self._enabled = {"unet": False, "text": False}  # whether adapter layers run
        self._adapters_made = 0

    @staticmethod
    def key(loras: Sequence[LoraWeight]) -> tuple[LoraWeight, ...]:
        """A job's LoRA set in one order: jobs with equal keys can share a batch."""
        return tuple(sorted(loras, key=lambda lora: lora.name))

    @property
    def text_encoder_key(self) -> tuple[LoraWeight, ...]:
        """The active LoRAs that change the text encoder: what prompt encodings depend on."""
        return tuple(lora for lora in self._active if self._loaded[lora.name].text_encoder)

    @torch.inference_mode()  # the adapters' weights are inference tensors: peft touches them
    def activate(self, loras: Sequence[LoraWeight]) -> None:
        """Make `loras` (checked) the model's LoRAs, reading any not loaded yet."""
        wanted = self.key(loras)
        if wanted == self._active:
            return
        read = [lora.name for lora in wanted if lora.name not in self._loaded]
        for lora in wanted:
            self._load(lora.name, keep={lora.name for lora in wanted})
        unet, encoder = self.models.unet, self.models.text_encoder
        on_unet = [lora for lora in wanted if self._loaded[lora.name].unet]
        on_encoder = [lora for lora in wanted if self._loaded[lora.name].text_encoder]
        if on_unet:
            unet.set_adapters(self._adapters(on_unet), [lora.weight for lora in on_unet])
        if on_encoder:
            set_weights_and_activate_adapters(
                encoder, self._adapters(on_encoder), [lora.weight for lora in on_encoder]
            )
        # Disabled adapter layers call the original layer alone. A pass over the model's
        # layers is needed only when that changes, or new layers came with a file.
        for part, model, enabled in (
            ("unet", unet, bool(on_unet)),
            ("text", encoder, bool(on_encoder)),
        ):
            if read or self._enabled[part] != enabled:
                set_adapter_layers(model, enabled=enabled)
                self._enabled[part] = enabled
        self._active = wanted

    def _adapters(self, loras: list[LoraWeight]) -> list[str]:
        return [self._loaded[lora.name].adapter for lora in loras]

    def _load(self, name: str, keep: set[str]) -> None:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return
        for old in list(self._loaded):
            if len(self._loaded) < self.kept:
                break
            if old not in keep:
                self._unload(old)
        file = self.files[name]
        self._adapters_made += 1
        loaded = _Loaded(f"lora{self._adapters_made}", unet=False, text_encoder=False)
        try:
            self._read(file, loaded)
        except Exception as error:
            # Files come from anywhere and diffusers' converters fail in many ways; any of
            # them means that this file does not fit this model.
            self._remove_layers(loaded)
            raise invalid(
                "loras",
                f"cannot load the LoRA {name!r} ({file.path.name}) into {self.models.name}: "
                f"{str(error)[:300]}",
            ) from None
        self._loaded[name] = loaded

    def _read(self, file: LoraFile, loaded: _Loaded) -> None:
        """Add the file's adapter layers to the model, noting in `loaded` which parts."""
        # use_safetensors=True: never diffusers' fall-back to pickle for a file it cannot read.
        state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
            str(file.path), use_safetensors=True, local_files_only=True, return_lora_metadata=True
        )
        if not state or not all("lora" in key for key in state):
            raise ValueError("not a LoRA: its tensors are not named as LoRA weights")
        with warnings.catch_warnings():
            # peft warns that a second adapter makes several adapters in one model: it does.
            warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
            if any(key.startswith("unet.") for key in state):
                StableDiffusionLoraLoaderMixin.load_lora_into_unet(
                    state, alphas, self.models.unet, adapter_name=loaded.adapter, metadata=metadata
                )
                loaded.unet = True
            loaded.text_encoder = _load_into_text_encoder(
                state, alphas, metadata, self.models.text_encoder, loaded.adapter
            )
        if not (loaded.unet or loaded.text_encoder):
            raise ValueError("it has no weights for an SD 1.5 UNet or text encoder")

    def _unload(self, name: str) -> None:
        self._remove_layers(self._loaded.pop(name))

    def _remove_layers(self, loaded: _Loaded) -> None:
        if loaded.adapter in getattr(self.models.unet, "peft_config", {}):
            self.models.unet.delete_adapters(loaded.adapter)
        delete_adapter_layers(self.models.text_encoder, loaded.adapter)


def _load_into_text_encoder(state, alphas, metadata, encoder, adapter: str) -> bool:
    """diffusers' `_load_lora_into_text_encoder`, with peft's own injection in place of
    transformers' `load_adapter`. Returns whether the file had text-encoder weights."""
    prefix = "text_encoder."
    layers = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not layers:
        return False
    layers = convert_state_dict_to_peft(convert_state_dict_to_diffusers(layers))
    if not hasattr(encoder, "text_model"):  # transformers 5's CLIPTextModel is flattened
        layers = {k.removeprefix("text_model."): v for k, v in layers.items()}
    if metadata:
        config = {k.removeprefix(prefix): v for k, v in metadata.items() if k.startswith(prefix)}
    else:
        ranks = {k: v.shape[1] for k, v in layers.items() if k.endswith("lora_B.weight")}
        if alphas is not None:
            alphas = {k.removeprefix(prefix): v for k, v in alphas.items() if k.startswith(prefix)}
        config = get_peft_kwargs(ranks, alphas, layers, is_unet=False)
    inject_adapter_in_model(LoraConfig(**config), encoder, adapter_name=adapter)
    set_peft_model_state_dict(encoder, layers, adapter_name=adapter)
    encoder.to(device=encoder.device, dtype=encoder.dtype)
    return True
