"""Model sets: one SD-1.5-shaped base model plus named ControlNets.

Two sources, one shape:
- `tiny()`: the embedded default, built in code from small configs with a fixed seed. No
  files, no downloads. It draws noise, not pictures: it exists so that every feature runs
  and is tested on a CPU through the same code path as real models.
- `load(path)`: a TOML file naming a base model and control models, each a local diffusers
  folder or a hub id, loaded with diffusers' `from_pretrained`, safetensors only:

      name = "sd15"                      # optional; default: the file's stem
      [base]
      path = "stable-diffusion-v1-5/stable-diffusion-v1-5"
      [controls.depth]
      path = "lllyasviel/control_v11f1p_sd15_depth"
      kind = "depth"
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    ControlNetModel,
    DDIMScheduler,
    UNet2DConditionModel,
)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from . import autoencoders
from .errors import ModelConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# Kinds of control map a ControlNet can expect; `kind` in the TOML must be one of these.
CONTROL_KINDS = (
    "canny",
    "depth",
    "normal",
    "lineart",
    "scribble",
    "softedge",
    "seg",
    "inpaint",
    "openpose",
    "mlsd",
    "tile",
)

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
    taesd: AutoencoderTiny | None = None  # tiny autoencoder, see `autoencoders`

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
        tiny = [self.taesd] if self.taesd is not None else []
        return [self.unet, self.vae, self.text_encoder, *nets, *tiny]


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


# ---------------------------------------------------------------------------------------
# Real models from a TOML file


def _refuse_pickles(path: str, subfolder: str | None) -> None:
    """Refuse a local folder whose weights are only pickle checkpoints.

    diffusers with use_safetensors=True would fail too, but with a message about a missing
    file; a user with a .bin or .ckpt needs to hear that pickles are refused on purpose.
    """
    folder = Path(path, subfolder) if subfolder else Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(
        p.name for p in folder.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth")
    )
    if pickles:
        raise ModelConfigError(
            f"{folder}: only safetensors weights are loaded, found the pickle checkpoint "
            f"{pickles[0]}; convert it to .safetensors (e.g. load it and save_pretrained "
            "with safe_serialization=True) — pickles can run code when loaded"
        )


def _from_pretrained(cls, path: str, subfolder: str | None, dtype: torch.dtype):
    _refuse_pickles(path, subfolder)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    try:
        return cls.from_pretrained(path, use_safetensors=True, torch_dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        where = f"{path}/{subfolder}" if subfolder else path
        raise ModelConfigError(f"{where}: cannot load {cls.__name__}: {error}") from error


def load(
    config_path: str | Path, device: str | None = None, dtype: torch.dtype | None = None
) -> ModelSet:
    """Load the model set a TOML file describes (see the module docstring).

    Relative local paths are taken relative to the TOML file. Device and dtype default to
    CUDA + float16 when a GPU is there, else CPU + float32.
    """
    config_path = Path(config_path)
    try:
        config = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ModelConfigError(f"{config_path}: {error}") from error
    if "base" not in config or "path" not in config["base"]:
        raise ModelConfigError(f'{config_path}: needs a [base] table with path = "..."')

    def resolve(entry: dict, where: str) -> str:
        if not isinstance(entry.get("path"), str):
            raise ModelConfigError(f"{config_path}: {where}.path must be a string")
        local = config_path.parent / entry["path"]
        return str(local) if local.exists() else entry["path"]

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    base = resolve(config["base"], "base")
    tokenizer = _from_pretrained_tokenizer(base)
    controls = {}
    for name, entry in config.get("controls", {}).items():
        kind = entry.get("kind")
        if kind not in CONTROL_KINDS:
            raise ModelConfigError(
                f"{config_path}: controls.{name}.kind must be one of {', '.join(CONTROL_KINDS)}"
                f" (got {kind!r})"
            )
        path = resolve(entry, f"controls.{name}")
        controls[name] = ControlNet(
            name, kind, _from_pretrained(ControlNetModel, path, None, dtype)
        )
    models = ModelSet(
        name=config.get("name", config_path.stem),
        unet=_from_pretrained(UNet2DConditionModel, base, "unet", dtype),
        vae=_from_pretrained(AutoencoderKL, base, "vae", dtype),
        text_encoder=_from_pretrained(CLIPTextModel, base, "text_encoder", dtype),
        tokenizer=tokenizer,
        scheduler_config=dict(DDIMScheduler.load_config(base, subfolder="scheduler")),
        controls=controls,
    )
    # Issue 14: `taesd = PATH` in [base] names a tiny autoencoder (see `autoencoders`).
    if "taesd" in config["base"]:
        path = resolve({"path": config["base"]["taesd"]}, "base.taesd")
        models.taesd = autoencoders.load_taesd(path, dtype)
    for module in models.modules():
        module.eval().requires_grad_(False)
    return models.to(device, dtype)


def _from_pretrained_tokenizer(base: str) -> CLIPTokenizer:
    try:
        return CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    except (OSError, ValueError) as error:
        raise ModelConfigError(f"{base}/tokenizer: cannot load the tokenizer: {error}") from error
