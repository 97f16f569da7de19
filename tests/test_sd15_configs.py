"""The SD 1.5 configs and tokenizer shipped in server/tether_server/configs/sd15, which real
single-file checkpoints are built from: no SD 1.5 weights are here, so the modules are
built on the meta device from the shipped configs, and diffusers' own converters must map
a checkpoint of SD 1.5's original layout onto exactly their parameters, name and shape."""

from __future__ import annotations

import json

import original_layout
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_controlnet_checkpoint,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    infer_diffusers_model_type,
)
from tether_server import checkpoints
from tether_server.catalog import SD15_CONFIGS
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def config(part: str) -> dict:
    return json.loads((SD15_CONFIGS / part / "config.json").read_text())


def meta_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items()}


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def sd15():
    """SD 1.5's modules from the shipped configs, without weights."""
    with torch.device("meta"):
        return {
            "unet": UNet2DConditionModel.from_config(config("unet")),
            "vae": AutoencoderKL.from_config(config("vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
            "controlnet": ControlNetModel.from_config(config("controlnet")),
        }


@pytest.fixture(scope="module")
def original(sd15) -> dict[str, torch.Tensor]:
    """An SD 1.5 checkpoint's tensors (meta) in the original layout."""
    return original_layout.checkpoint(sd15["unet"], sd15["vae"], sd15["text_encoder"])


def test_tokenizer_gives_sd15_token_ids():
    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIGS / "tokenizer")
    assert tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        49406,
        49407,
        49407,
    )
    assert len(tokenizer) == 49408
    # Ids of SD 1.5's tokenizer (openai/clip-vit-large-patch14), as its users print them.
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("a photo of an astronaut riding a horse on mars").input_ids == [
        49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407,
    ]  # fmt: skip
    assert tokenizer("A Dog!").input_ids == [49406, 320, 1929, 256, 49407]


def test_the_original_layout_is_sd15s(original):
    """Anchors of SD 1.5's own checkpoint (v1-5-pruned-emaonly.safetensors): diffusers'
    model-type probe, its key counts (686 UNet, 248 VAE, 196 text encoder tensors besides
    position_ids) and some shapes."""
    assert infer_diffusers_model_type(original) == "v1"
    count = {
        prefix: sum(key.startswith(prefix) for key in original)
        for prefix in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
    }
    assert count == {
        "model.diffusion_model.": 686,
        "first_stage_model.": 248,
        "cond_stage_model.": 196,
    }
    known = {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (
            320,
            768,
        ),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (
            49408,
            768,
        ),
    }
    assert {key: tuple(original[key].shape) for key in known} == known
    header = {key: list(tensor.shape) for key, tensor in original.items()}
    assert checkpoints.describe(header).kind == "base"


def test_diffusers_maps_an_sd15_checkpoint_onto_the_shipped_configs(sd15, original):
    unet = convert_ldm_unet_checkpoint(dict(original), config("unet"))
    assert shapes(unet) == shapes(meta_state(sd15["unet"]))
    vae = convert_ldm_vae_checkpoint(dict(original), config("vae"))
    assert shapes(vae) == shapes(meta_state(sd15["vae"]))
    clip = convert_ldm_clip_checkpoint(dict(original))
    clip = {key.removeprefix("text_model."): value for key, value in clip.items()}
    assert shapes(clip) == shapes(meta_state(sd15["text_encoder"]))


def test_diffusers_maps_an_sd15_controlnet_onto_the_shipped_config(sd15):
    original = original_layout.controlnet(sd15["controlnet"])
    known = {
        "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
        "control_model.input_hint_block.14.weight": (320, 256, 3, 3),
        "control_model.zero_convs.11.0.weight": (1280, 1280, 1, 1),
        "control_model.middle_block_out.0.weight": (1280, 1280, 1, 1),
    }
    assert {key: tuple(original[key].shape) for key in known} == known
    assert infer_diffusers_model_type(original) == "controlnet"
    header = {key: list(tensor.shape) for key, tensor in original.items()}
    assert checkpoints.describe(header).kind == "controlnet"
    converted = convert_controlnet_checkpoint(dict(original), config("controlnet"))
    assert shapes(converted) == shapes(meta_state(sd15["controlnet"]))
