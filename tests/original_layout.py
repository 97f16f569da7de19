"""diffusers state dicts -> the original Stable Diffusion / ControlNet key layout, the one of
A1111 and ComfyUI single files (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.*`, `control_model.*`).

The inverse of diffusers' own converters (diffusers.loaders.single_file_utils:
convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint,
convert_controlnet_checkpoint), for any block layout: the tests write their tiny model in
this layout and load it back through diffusers' real single-file path, and a shape check
holds the mapping to SD 1.5's own layout (tests/test_sd15_configs.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

_RESNET = {  # diffusers -> original, inside a UNet resnet
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def checkpoint(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """One single-file checkpoint (UNet, VAE, text encoder), as A1111 saves one."""
    state = {}
    state.update(_prefixed("model.diffusion_model.", unet_keys(unet.config), unet.state_dict()))
    state.update(_prefixed("first_stage_model.", vae_keys(vae.config), vae.state_dict()))
    for key, tensor in text_encoder.state_dict().items():
        # transformers' CLIPTextModel is flat; the original nests it under text_model.
        state[f"cond_stage_model.transformer.text_model.{key}"] = tensor
    return {key: tensor.contiguous() for key, tensor in state.items()}


def vae(model) -> dict[str, torch.Tensor]:
    """A VAE single file, as vae-ft-mse-840000-ema-pruned.safetensors (no prefix)."""
    state = _prefixed("", vae_keys(model.config), model.state_dict())
    return {key: tensor.contiguous() for key, tensor in state.items()}


def controlnet(net) -> dict[str, torch.Tensor]:
    """A ControlNet single file, as lllyasviel's control_v11*_sd15_*.safetensors."""
    keys = controlnet_keys(net.config)
    state = _prefixed("control_model.", keys, net.state_dict())
    return {key: tensor.contiguous() for key, tensor in state.items()}


def unet_keys(config) -> dict[str, str]:
    """diffusers UNet parameter prefix/name -> original name, for the UNet `config`."""
    keys = {new: old for new, old in DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"].items()}
    keys.update(_encoder_keys(config))
    per_block = config["layers_per_block"] + 1
    for b, kind in enumerate(config["up_block_types"]):
        for j in range(per_block):
            out = b * per_block + j
            keys[f"up_blocks.{b}.resnets.{j}."] = f"output_blocks.{out}.0."
            if "CrossAttn" in kind:
                keys[f"up_blocks.{b}.attentions.{j}."] = f"output_blocks.{out}.1."
        if b < len(config["up_block_types"]) - 1:
            at = 2 if "CrossAttn" in kind else 1
            keys[f"up_blocks.{b}.upsamplers.0."] = (
                f"output_blocks.{b * per_block + per_block - 1}.{at}."
            )
    return keys


def controlnet_keys(config) -> dict[str, str]:
    keys = {new: old for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["layers"].items()}
    keys.update(_encoder_keys(config))
    blocks = len(config["down_block_types"]) * (config["layers_per_block"] + 1)
    for i in range(blocks):
        keys[f"controlnet_down_blocks.{i}."] = f"zero_convs.{i}.0."
    keys["controlnet_mid_block."] = "middle_block_out.0."
    embedding_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    for k in range(embedding_blocks):
        keys[f"controlnet_cond_embedding.blocks.{k}."] = f"input_hint_block.{2 * (k + 1)}."
    return keys


def vae_keys(config) -> dict[str, str]:
    keys = dict(DIFFUSERS_TO_LDM_MAPPING["vae"])
    count = len(config["block_out_channels"])
    for i in range(count):
        keys[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        keys[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        # The original decoder counts its up blocks from the bottom.
        keys[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{count - 1 - i}.block."
        keys[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{count - 1 - i}.upsample."
    for part in ("encoder", "decoder"):
        for k in range(2):
            keys[f"{part}.mid_block.resnets.{k}."] = f"{part}.mid.block_{k + 1}."
        keys[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    return keys


def write_configs(folder: Path, unet, vae, text_encoder, tokenizer, scheduler_config) -> Path:
    """A diffusers-format config folder for a single file of these modules (what
    configs/sd15 is for SD 1.5)."""
    folder.mkdir(parents=True)
    shipped = Path(__file__).resolve().parent.parent / "server/tether_server/configs/sd15"
    (folder / "model_index.json").write_text((shipped / "model_index.json").read_text())
    unet.save_config(folder / "unet")
    vae.save_config(folder / "vae")
    text_encoder.config.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "PNDMScheduler", **scheduler_config})
    )
    return folder


def _encoder_keys(config) -> dict[str, str]:
    """The input blocks and the middle block, which a UNet and a ControlNet share."""
    keys = {}
    per_block = config["layers_per_block"] + 1
    for b, kind in enumerate(config["down_block_types"]):
        for j in range(config["layers_per_block"]):
            index = 1 + b * per_block + j
            keys[f"down_blocks.{b}.resnets.{j}."] = f"input_blocks.{index}.0."
            if "CrossAttn" in kind:
                keys[f"down_blocks.{b}.attentions.{j}."] = f"input_blocks.{index}.1."
        if b < len(config["down_block_types"]) - 1:
            keys[f"down_blocks.{b}.downsamplers.0.conv."] = (
                f"input_blocks.{(b + 1) * per_block}.0.op."
            )
    keys["mid_block.resnets.0."] = "middle_block.0."
    keys["mid_block.attentions.0."] = "middle_block.1."
    keys["mid_block.resnets.1."] = "middle_block.2."
    return keys


def _prefixed(prefix: str, keys: dict[str, str], state: dict) -> dict[str, torch.Tensor]:
    """`state` renamed by `keys` (whole names or prefixes, the longest prefix wins)."""
    prefixes = sorted((k for k in keys if k.endswith(".")), key=len, reverse=True)
    renamed = {}
    for name, tensor in state.items():
        if name in keys:
            renamed[prefix + keys[name]] = tensor
            continue
        head = next((p for p in prefixes if name.startswith(p)), None)
        if head is None:
            raise KeyError(f"no original name for {name}")
        rest = name[len(head) :]
        old = keys[head]
        if old.startswith(("input_blocks", "output_blocks", "middle_block.0", "middle_block.2")):
            rest = _renamed(rest, _RESNET)
        if ".mid.attn_1." in old:
            rest = _renamed(rest, _VAE_ATTENTION)
            if tensor.ndim == 2:  # the original's attention projections are 1x1 convolutions
                tensor = tensor[:, :, None, None]
        elif ".block." in old or ".mid.block_" in old:
            rest = rest.replace("conv_shortcut", "nin_shortcut")
        renamed[prefix + old + rest] = tensor
    return renamed


def _renamed(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest
