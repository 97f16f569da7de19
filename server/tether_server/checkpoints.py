"""What a model file holds, told from its safetensors header alone: no weights, no torch.

A .safetensors file starts with the length of its JSON header (8 bytes, little-endian) and
the header, which names every tensor with its shape. Reading it costs a few hundred
kilobytes even for a 4 GB checkpoint, so every file the server is given is checked before
the server listens: a pickle, a file that is not safetensors, an SDXL checkpoint where an
SD 1.5 one belongs, a LoRA where a ControlNet belongs.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelConfigError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# A header is a few MB at most (SD 1.5 checkpoints: ~150 KB); a larger length means the
# file is not safetensors.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

# What each kind is called in messages.
KIND_NAMES = {
    "base": "an SD 1.5 checkpoint",
    "controlnet": "an SD 1.5 ControlNet",
    "vae": "a VAE",
    "lora": "a LoRA",
    "embedding": "a textual-inversion embedding",
}

# Keys (or key prefixes) that identify a file's layout.
_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
_UNET_CROSS = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_CONTROL_ORIGINAL = "control_model.input_hint_block.0.weight"
_CONTROL_DIFFUSERS = "controlnet_cond_embedding.conv_in.weight"
_CONTROL_CROSS = "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


@dataclass(frozen=True)
class Contents:
    """A file's kind ("base", "controlnet", "vae", "lora", "embedding"; None: nothing Tether
    loads) and what it is, in words for messages."""

    kind: str | None
    what: str


def refuse_unloadable_suffix(path: Path) -> None:
    """Pickles and other formats are refused by name, before anything is read."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelConfigError(
            f"{path}: a pickle checkpoint; only .safetensors files are loaded (a pickle can run "
            "code when loaded): convert it to .safetensors, or get the .safetensors release"
        )
    if path.suffix.lower() != ".safetensors":
        raise ModelConfigError(
            f"{path}: not a .safetensors file; Tether loads .safetensors files and diffusers "
            "folders"
        )


def read_header(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the file's header; ModelConfigError if it is not
    safetensors."""
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise ValueError("its first 8 bytes are not a safetensors header length")
            header = json.loads(file.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ModelConfigError(f"{path}: not a readable safetensors file ({error})") from error
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


def contents(path: Path) -> Contents:
    """What the .safetensors file at `path` holds (see `Contents`)."""
    return describe(read_header(path))


def describe(shapes: dict[str, list[int]]) -> Contents:
    """What a file with these tensors (name -> shape) holds."""
    keys = shapes.keys()

    def any_key(*parts: str) -> bool:
        return any(part in key for key in keys for part in parts)

    if "difference" in keys:
        return Contents(
            None,
            'a "difference" ControlNet (weights stored as a difference from SD 1.5, to be '
            "added to a base model's)",
        )
    if any(key.startswith("conditioner.embedders.") for key in keys):
        return Contents(None, "an SDXL checkpoint")
    if _UNET_IN in shapes:
        if any(key.startswith("cond_stage_model.model.") for key in keys) or (
            shapes.get(_UNET_CROSS, [0])[-1] == 1024
        ):
            return Contents(None, "an SD 2.x checkpoint")
        channels = shapes[_UNET_IN][1]
        if channels == 9:
            return Contents(None, "an inpainting checkpoint (a 9-channel UNet)")
        if channels != 4:
            return Contents(None, f"a checkpoint with a {channels}-channel UNet (not SD 1.5's 4)")
        return Contents("base", KIND_NAMES["base"])
    if (
        _CONTROL_ORIGINAL in shapes
        or _CONTROL_DIFFUSERS in shapes
        or "input_hint_block.0.weight" in shapes
    ):
        if any_key("label_emb", "add_embedding"):
            return Contents(None, "an SDXL ControlNet")
        if shapes.get(_CONTROL_CROSS, [0])[-1] == 1024:
            return Contents(None, "an SD 2.x ControlNet")
        return Contents("controlnet", KIND_NAMES["controlnet"])
    if any_key("lora_controlnet"):
        return Contents(None, "a Control-LoRA")
    if any(key.startswith(("adapter.", "body.0.")) for key in keys):
        return Contents(None, "a T2I-Adapter")
    if any_key(
        "lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "hada_", "lokr_"
    ):
        return Contents("lora", KIND_NAMES["lora"])
    if "encoder.conv_in.weight" in shapes and "decoder.conv_out.weight" in shapes:
        return Contents("vae", KIND_NAMES["vae"])
    if "first_stage_model.encoder.conv_in.weight" in shapes and not any_key("diffusion_model"):
        return Contents("vae", KIND_NAMES["vae"])
    if "clip_g" in keys:
        return Contents(None, "an SDXL embedding")
    if "emb_params" in keys or (len(shapes) == 1 and len(next(iter(shapes.values()))) <= 2):
        return Contents("embedding", KIND_NAMES["embedding"])
    return Contents(
        None, "no SD 1.5 checkpoint, ControlNet, VAE, LoRA or embedding that Tether knows"
    )


def check(path: Path, kind: str, where: str) -> None:
    """ModelConfigError unless `path` is a .safetensors file holding `kind`; `where` says
    where the file was named (a TOML table or a models folder), for the fix."""
    refuse_unloadable_suffix(path)
    found = contents(path)
    if found.kind == kind:
        return
    raise ModelConfigError(
        f"{path}: {found.what}, not {KIND_NAMES[kind]} as {where} needs; {_fix(found.kind)}"
    )


def _fix(found: str | None) -> str:
    if found is None:
        return "Tether runs SD 1.5 models, their ControlNets, LoRAs and embeddings"
    table = {
        "base": "name it in a [models.NAME] table (or put it in checkpoints/)",
        "controlnet": "name it in a [controls.NAME] table (or put it in controlnet/)",
        "vae": 'give it to a model as vae = "..."',
        "lora": "name it in a [loras.NAME] table (or put it in loras/)",
        "embedding": "name it in an [embeddings.NAME] table (or put it in embeddings/)",
    }
    return table[found]
