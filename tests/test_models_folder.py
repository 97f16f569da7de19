"""Models folders as ComfyUI and A1111 keep them, alone and with a TOML file."""

from __future__ import annotations

from pathlib import Path

import model_files
import pytest
import torch
from safetensors.torch import save_file
from tether_server import catalog
from tether_server.errors import ModelConfigError


def fake(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.zeros(shape) for name, shape in tensors.items()}, path)
    return path


LORA = {"lora_unet_down_blocks_0.lora_down.weight": (4, 8)}
EMBEDDING = {"emb_params": (2, 32)}
SDXL = {
    "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
    "conditioner.embedders.1.model.positional_embedding": (4, 8),
}


@pytest.fixture(scope="module")
def comfyui(tiny_models, tmp_path_factory) -> Path:
    """ComfyUI/models: single files, a diffusers folder, subfolders and things Tether
    cannot use."""
    root = tmp_path_factory.mktemp("ComfyUI") / "models"
    model_files.single_file(tiny_models, root / "checkpoints" / "sd15" / "tiny_a.safetensors")
    model_files.diffusers_folder(tiny_models, root / "checkpoints" / "tiny_b")
    fake(root / "checkpoints" / "juggernautXL.safetensors", SDXL)
    (root / "checkpoints" / "old.ckpt").write_bytes(b"pickle")
    xl = root / "checkpoints" / "sdxl-diffusers"
    (xl / "unet").mkdir(parents=True)
    (xl / "unet" / "config.json").write_text('{"addition_embed_type": "text_time"}')
    (root / "checkpoints" / "tiny_a.yaml").write_text("ignored")
    for kind, stem in [
        ("canny", "control_v11p_sd15_canny"),
        ("normal", "control_v11p_sd15_normalbae"),
    ]:
        model_files.control_file(tiny_models, kind, root / "controlnet" / f"{stem}.safetensors")
    tiny_models.controls["depth"].model.save_pretrained(root / "controlnet" / "depth-v11f1p")
    model_files.control_file(tiny_models, "canny", root / "controlnet" / "qr_monster.safetensors")
    fake(
        root / "controlnet" / "diff_control_sd15_canny_fp16.safetensors",
        {"difference": (1,), "control_model.input_hint_block.0.weight": (8, 3, 3, 3)},
    )
    fake(root / "loras" / "style" / "watercolor.safetensors", LORA)
    fake(root / "embeddings" / "easynegative.safetensors", EMBEDDING)
    (root / "embeddings" / "badhands.pt").write_bytes(b"pickle")
    (root / "vae").mkdir()
    return root


@pytest.fixture(scope="module")
def a1111(tiny_models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stable-diffusion-webui") / "models"
    model_files.single_file(tiny_models, root / "Stable-diffusion" / "tiny_a.safetensors")
    model_files.control_file(
        tiny_models, "depth", root / "ControlNet" / "control_v11f1p_sd15_depth.safetensors"
    )
    fake(root / "Lora" / "watercolor.safetensors", LORA)
    fake(root / "embeddings" / "easynegative.safetensors", EMBEDDING)
    return root


def test_comfyui_layout(comfyui):
    found = catalog.read(models_dir=comfyui)
    assert list(found.models) == ["tiny_a", "tiny_b"]  # in name order, to any depth
    assert found.default == "tiny_a"
    assert found.models["tiny_a"].default_size == 512  # SD 1.5's shipped configs
    assert found.models["tiny_b"].default_size == 256  # the folder's own
    kinds = {name: entry.kind for name, entry in found.controls.items()}
    assert kinds == {
        "control_v11p_sd15_canny": "canny",
        "control_v11p_sd15_normalbae": "normal",
        "depth-v11f1p": "depth",
    }
    assert found.loras == {
        "watercolor": catalog.LoraFile(
            "watercolor", comfyui / "loras" / "style" / "watercolor.safetensors"
        )
    }
    assert list(found.embeddings) == ["easynegative"]
    left_out = "\n".join(found.left_out)
    for line in [
        "juggernautXL.safetensors: an SDXL checkpoint",
        "old.ckpt: a pickle checkpoint",
        "qr_monster.safetensors: its name does not tell what map it expects",
        'diff_control_sd15_canny_fp16.safetensors: a "difference" ControlNet',
        "badhands.pt: a pickle checkpoint",
        "sdxl-diffusers: an SDXL model, not an SD 1.5 model as checkpoints/ needs",
    ]:
        assert line in left_out
    assert len(found.left_out) == 6
    assert all("\n" not in line for line in found.left_out)


def test_a1111_layout(a1111):
    found = catalog.read(models_dir=a1111)
    assert list(found.models) == ["tiny_a"]
    assert {n: c.kind for n, c in found.controls.items()} == {"control_v11f1p_sd15_depth": "depth"}
    assert list(found.loras) == ["watercolor"]
    assert list(found.embeddings) == ["easynegative"]
    assert found.left_out == []


def test_toml_and_folder_combined(comfyui, tmp_path):
    """The TOML's models come first; its names win a clash; a file it names is not listed
    again; its kind wins over the file name's."""
    toml = tmp_path / "models.toml"
    toml.write_text(
        f"""
        [models.tiny_b]
        path = "{comfyui / "checkpoints" / "sd15" / "tiny_a.safetensors"}"
        [controls.edges]
        path = "{comfyui / "controlnet" / "control_v11p_sd15_canny.safetensors"}"
        kind = "lineart"
        [controls.qr]
        path = "{comfyui / "controlnet" / "qr_monster.safetensors"}"
        kind = "tile"
        """
    )
    found = catalog.read(toml, comfyui)
    assert list(found.models) == ["tiny_b"]
    assert found.models["tiny_b"].path.name == "tiny_a.safetensors"
    assert any("tiny_b: its name 'tiny_b' is taken by" in line for line in found.left_out)
    kinds = {name: entry.kind for name, entry in found.controls.items()}
    assert kinds == {
        "edges": "lineart",
        "qr": "tile",
        "control_v11p_sd15_normalbae": "normal",
        "depth-v11f1p": "depth",
    }
    assert not any("qr_monster" in line for line in found.left_out)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("control_v11p_sd15_canny_fp16", "canny"),
        ("control_v11f1p_sd15_depth", "depth"),
        ("control_v11p_sd15_normalbae", "normal"),
        ("control_sd15_normal", "normal"),
        ("control_v11p_sd15s2_lineart_anime", "lineart"),
        ("control_v11p_sd15_scribble", "scribble"),
        ("control_v11p_sd15_softedge", "softedge"),
        ("control_sd15_hed", "softedge"),
        ("control_v11p_sd15_seg", "seg"),
        ("control_v11p_sd15_inpaint", "inpaint"),
        ("control_v11p_sd15_openpose", "openpose"),
        ("control_v11p_sd15_mlsd", "mlsd"),
        ("control_v11f1e_sd15_tile", "tile"),
        ("controlnetPreTrained_cannyDifferenceV10", "canny"),
        ("control_v11e_sd15_shuffle", None),
        ("canny_and_depth_mix", None),
    ],
)
def test_kind_from_file_name(name, kind):
    assert catalog.control_kind(name) == kind


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "no such folder"),
        ({"unrelated": None}, "holds none of ComfyUI's checkpoints/"),
        ({"loras/x.safetensors": LORA}, "no SD 1.5 base model to serve"),
        ({"checkpoints/xl.safetensors": SDXL}, "no SD 1.5 base model to serve"),
    ],
)
def test_a_folder_that_cannot_be_served_is_one_line(tmp_path, layout, message):
    root = tmp_path / "models"
    if layout:
        root.mkdir()
    for relative, tensors in layout.items():
        if tensors is None:
            (root / relative).mkdir()
        else:
            fake(root / relative, tensors)
    with pytest.raises(ModelConfigError, match=message) as raised:
        catalog.read(models_dir=root)
    assert "\n" not in str(raised.value)
