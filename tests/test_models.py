"""Real model files: the tiny model saved as diffusers folders and as single .safetensors
files in the original SD / ControlNet layout, named in a TOML file and loaded through
diffusers' own loaders (single files: diffusers' single-file path, with local configs)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import model_files
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tether_server import catalog, models
from tether_server.engine import ControlInput, Engine, Job
from tether_server.errors import ModelConfigError
from tether_server.registry import ModelRegistry


@pytest.fixture(scope="module")
def saved(tiny_models, tmp_path_factory) -> Path:
    """tiny, as a diffusers folder and a single file (with the configs a tiny single file
    needs), and its ControlNets as folders and as single files."""
    root = tmp_path_factory.mktemp("models")
    model_files.diffusers_folder(tiny_models, root / "tiny-sd15")
    model_files.single_file(tiny_models, root / "tiny.safetensors")
    model_files.configs(tiny_models, root / "tiny-configs")
    model_files.control_config(tiny_models, root / "tiny-control-config")
    for name, control in tiny_models.controls.items():
        control.model.save_pretrained(root / f"control-{name}")
        model_files.control_file(tiny_models, name, root / f"control_tiny_{name}.safetensors")
    return root


def write_toml(folder: Path, text: str) -> Path:
    path = folder / "models.toml"
    path.write_text(text)
    return path


def loaded(toml: Path, name: str = "", controls: tuple[str, ...] = ()) -> models.ModelSet:
    registry = ModelRegistry(catalog.read(toml), device="cpu", dtype=torch.float32)
    return registry.load(name, controls)


def render(model_set: models.ModelSet, control_name: str | None) -> np.ndarray:
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    units = [ControlInput(control_name, image)] if control_name else []
    job = Job(prompt="x", steps=3, guidance_scale=7.5, width=64, height=64, controls=units)
    return Engine(model_set).run([job])[0].image


def test_tiny_builds_fast_and_is_sd15_shaped():
    started = time.perf_counter()
    tiny = models.tiny()
    assert time.perf_counter() - started < 1.0
    assert tiny.vae_scale_factor == 8
    assert tiny.unet.config.in_channels == 4
    assert tiny.tokenizer.model_max_length == 77
    assert set(tiny.controls) == {"canny", "depth", "normal"}
    # Same seed, same weights: the embedded model is reproducible.
    again = models.tiny()
    assert torch.equal(tiny.unet.conv_in.weight, again.unet.conv_in.weight)


def test_the_older_base_form_loads_the_saved_folders(saved, tiny_models):
    config = write_toml(
        saved,
        """
        name = "my-sd"
        [base]
        path = "tiny-sd15"
        [controls.edges]
        path = "control-canny"
        kind = "canny"
        [controls.depth]
        path = "control-depth"
        """,
    )
    model_set = loaded(config, "my-sd", ("edges", "depth"))
    assert model_set.name == "my-sd"
    assert model_set.dtype == torch.float32
    kinds = {n: c.kind for n, c in model_set.controls.items()}
    assert kinds == {"edges": "canny", "depth": "depth"}  # depth: told by its name
    # Same weights, so the same image as the in-memory model.
    np.testing.assert_array_equal(render(model_set, "edges"), render(tiny_models, "canny"))


def test_single_files_give_the_image_of_the_same_weights_in_diffusers_folders(saved):
    config = write_toml(
        saved,
        """
        [models.single]
        path = "tiny.safetensors"
        config = "tiny-configs"
        [models.folder]
        path = "tiny-sd15"
        [controls.canny-file]
        path = "control_tiny_canny.safetensors"
        config = "tiny-control-config"
        [controls.canny-folder]
        path = "control-canny"
        kind = "canny"
        """,
    )
    entries = catalog.read(config)
    assert entries.controls["canny-file"].kind == "canny"  # from the file name
    registry = ModelRegistry(entries, device="cpu", dtype=torch.float32, max_loaded=2)
    from_files = render(registry.load("single", ["canny-file"]), "canny-file")
    from_folders = render(registry.load("folder", ["canny-folder"]), "canny-folder")
    np.testing.assert_array_equal(from_files, from_folders)
    # The unit changes the image, so the single-file ControlNet's weights are held too.
    assert not np.array_equal(from_files, render(registry.load("single"), None))


def test_a_model_can_have_another_vae(saved, tmp_path):
    other = models.tiny(seed=1)
    model_files.vae_file(other, tmp_path / "other-vae.safetensors")
    config = write_toml(
        tmp_path,
        f"""
        [models.file]
        path = "{saved / "tiny.safetensors"}"
        config = "{saved / "tiny-configs"}"
        vae = "other-vae.safetensors"
        [models.folder]
        path = "{saved / "tiny-sd15"}"
        vae = "other-vae.safetensors"
        """,
    )
    registry = ModelRegistry(catalog.read(config), device="cpu", dtype=torch.float32)
    for name in ("file", "folder"):
        vae = registry.load(name).vae
        for key, tensor in other.vae.state_dict().items():
            assert torch.equal(vae.state_dict()[key], tensor), (name, key)


def test_a_file_missing_weights_is_one_line_naming_it(saved, tmp_path):
    from safetensors.torch import load_file

    state = load_file(saved / "tiny.safetensors")
    del state["model.diffusion_model.out.2.weight"]
    save_file(state, tmp_path / "cut.safetensors")
    config = write_toml(
        tmp_path, f'[models.cut]\npath = "cut.safetensors"\nconfig = "{saved / "tiny-configs"}"'
    )
    with pytest.raises(Exception, match="cut.safetensors: cannot load .* weights are missing"):
        loaded(config)


def test_pickle_folder_is_refused(saved, tiny_models, tmp_path):
    tiny_models.controls["depth"].model.save_pretrained(
        tmp_path / "pickled", safe_serialization=False
    )
    config = write_toml(
        tmp_path,
        f"""
        [models.base]
        path = "{saved / "tiny-sd15"}"
        [controls.depth]
        path = "pickled"
        """,
    )
    with pytest.raises(ModelConfigError, match="only safetensors weights are loaded.*pickle"):
        catalog.read(config)


def fake_file(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    save_file({name: torch.zeros(shape) for name, shape in tensors.items()}, path)
    return path


@pytest.fixture(scope="module")
def wrong_files(saved) -> Path:
    """Files that are not what a table needs."""
    fake_file(saved / "lora.safetensors", {"lora_unet_down.lora_down.weight": (4, 8)})
    fake_file(
        saved / "sdxl.safetensors",
        {
            "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
            "conditioner.embedders.1.model.positional_embedding": (4, 8),
        },
    )
    state = {"difference": (1,), "control_model.input_hint_block.0.weight": (8, 3, 3, 3)}
    fake_file(saved / "diff_control_sd15_canny_fp16.safetensors", state)
    shutil.copytree(saved / "control-canny", saved / "mystery")  # a name without a kind
    (saved / "old.ckpt").write_bytes(b"not read")
    (saved / "text.safetensors").write_text("not a safetensors file")
    return saved


@pytest.mark.parametrize(
    "text, message",
    [
        ("[controls.x]\npath='control-canny'", "no SD 1.5 base model to serve"),
        ("[modles.x]\npath='tiny-sd15'", r"unknown table or key 'modles'; a models file has"),
        ("[models.x]\npath='tiny-sd15'\nvea='x'", r"\[models.x\] has an unknown key 'vea'"),
        ("[models.x]\nhub='a/b'\npath='tiny-sd15'", r"needs path = .* or hub = .*\(one of them\)"),
        ("[base]\npath='tiny-sd15'\n[models.y]\npath='tiny-sd15'", "both \\[base\\] and"),
        ("[base\npath=", "models.toml"),
        ("[models.x]\npath = 'no-such-folder'", "no such file or folder .*no-such-folder$"),
        ("[models.x]\npath = 'lllyasviel/sd15'", 'for a hub id write hub = "lllyasviel/sd15"'),
        ("[models.x]\npath = 'old.ckpt'", "old.ckpt: a pickle checkpoint; only .safetensors"),
        ("[models.x]\npath = 'text.safetensors'", "text.safetensors: not a readable safetensors"),
        (
            "[models.x]\npath = 'control_tiny_canny.safetensors'",
            "an SD 1.5 ControlNet, not an SD 1.5 checkpoint as \\[models.x\\] needs; name it "
            "in a \\[controls.NAME\\] table",
        ),
        ("[models.x]\npath = 'sdxl.safetensors'", "an SDXL checkpoint, not an SD 1.5"),
        (
            "[models.x]\npath='tiny-sd15'\n[controls.c]\npath='diff_control_sd15_canny_fp16.safetensors'",
            'a "difference" ControlNet',
        ),
        (
            "[models.x]\npath='tiny-sd15'\n[controls.c]\npath='control-canny'\nkind='edges'",
            "kind must be one of canny, depth",
        ),
        (
            "[models.x]\npath='tiny-sd15'\n[controls.c]\npath='mystery'",
            'its name does not tell what map it expects; .* kind = "canny"',
        ),
        (
            "[models.x]\npath='tiny-sd15'\n[loras.c]\npath='tiny.safetensors'",
            "an SD 1.5 checkpoint, not a LoRA as \\[loras.c\\] needs",
        ),
        (
            "[models.x]\npath='tiny-sd15'\n[embeddings.e]\npath='lora.safetensors'",
            "a LoRA, not a textual-inversion embedding",
        ),
    ],
)
def test_bad_toml_is_one_line_naming_the_file_and_the_fix(wrong_files, text, message):
    with pytest.raises(ModelConfigError, match=message) as raised:
        catalog.read(write_toml(wrong_files, text))
    assert "\n" not in str(raised.value)


def test_a_missing_local_file_fails_at_once(tmp_path):
    """No hub lookup for a path (the issue saw 29 s of retries offline);
    tests/test_serve_models.py holds that no request leaves the process."""
    config = write_toml(tmp_path, '[models.x]\npath = "dreamshaper_8.safetensors"')
    started = time.perf_counter()
    with pytest.raises(ModelConfigError, match="no such file or folder .*dreamshaper_8"):
        catalog.read(config)
    assert time.perf_counter() - started < 1.0


def test_loras_and_embeddings_are_listed_for_the_engine(saved, tmp_path):
    fake_file(tmp_path / "detail.safetensors", {"lora_unet_a.lora_up.weight": (8, 4)})
    fake_file(tmp_path / "neg.safetensors", {"emb_params": (2, 32)})
    config = write_toml(
        tmp_path,
        f"""
        [models.x]
        path = "{saved / "tiny-sd15"}"
        [loras.detail]
        path = "detail.safetensors"
        [embeddings.easynegative]
        path = "neg.safetensors"
        """,
    )
    entries = catalog.read(config)
    assert entries.loras == {"detail": catalog.LoraFile("detail", tmp_path / "detail.safetensors")}
    assert entries.embeddings == {
        "easynegative": catalog.EmbeddingFile("easynegative", tmp_path / "neg.safetensors")
    }


def test_shipped_scheduler_config_is_the_tiny_models():
    shipped = json.loads((catalog.SD15_CONFIGS / "scheduler/scheduler_config.json").read_text())
    assert {k: v for k, v in shipped.items() if k in models.SD15_SCHEDULER_CONFIG} == (
        models.SD15_SCHEDULER_CONFIG
    )
