"""saving.save: a model set written in diffusers' layout loads back through its TOML."""

from __future__ import annotations

import torch
from tether_server import catalog, saving
from tether_server.registry import ModelRegistry


def test_save_writes_a_folder_its_toml_serves(tiny_models, tmp_path):
    weight = tiny_models.controls["depth"].model.controlnet_mid_block.weight
    before = weight.clone()
    toml = saving.save(tiny_models, tmp_path / "bf16", dtype=torch.bfloat16)
    listed = catalog.read(toml)
    registry = ModelRegistry(listed, device="cpu", dtype=torch.float32)
    loaded = registry.load("", controls=list(listed.controls))
    assert loaded.dtype == torch.float32
    assert {n: c.kind for n, c in loaded.controls.items()} == {
        n: c.kind for n, c in tiny_models.controls.items()
    }
    # Weights written in bfloat16 come back rounded, and saving left the model as it was.
    again = loaded.controls["depth"].model.controlnet_mid_block.weight
    assert torch.equal(again, weight.bfloat16().float()) and not torch.equal(again, weight)
    assert torch.equal(weight, before)
    # The tokenizer is written as the readable files docs/conventions.md describes.
    tokenizer = toml.parent / "tokenizer"
    assert sorted(p.name for p in tokenizer.iterdir()) == [
        "merges.txt",
        "tokenizer_config.json",
        "vocab.json",
    ]
    prompt = "a red sphere"
    assert loaded.tokenizer(prompt).input_ids == tiny_models.tokenizer(prompt).input_ids
