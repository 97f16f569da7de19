"""tether_krita.settings: the docker's parameters, their checks and their persistence."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tether

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "krita"))

from tether_krita import settings as plugin_settings  # noqa: E402
from tether_krita.settings import Settings  # noqa: E402


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"address": " "}, "address"),
        ({"strength": 0.0}, "Strength"),
        ({"edge_weight": 3.0}, "Edge weight"),
        ({"edge_low": 210}, "thresholds"),
        ({"steps": 0}, "Steps"),
        ({"seed": -5}, "Seed"),
        ({"tiling": "z"}, "Tiling must be none, x, y or xy"),
        ({"loras": (tether.Lora("ink", 12.0),)}, "weight of LoRA 'ink'"),
        ({"loras": (tether.Lora("ink"), tether.Lora("ink", 0.5))}, "'ink' is chosen twice"),
    ],
)
def test_settings_problems_are_explained(change, words):
    assert Settings().problem() is None
    problem = Settings(**change).problem()
    assert problem is not None and words in problem


def test_settings_persist_through_krita_string_store():
    store: dict[tuple[str, str], str] = {}
    chosen = Settings(
        prompt="a red door",
        seed=42,
        show_edges=True,
        strength=0.5,
        model="dreamshaper_8",
        loras=(tether.Lora("add_detail", 0.6), tether.Lora('ink;@"', -1.0)),
        tiling="xy",
    )
    plugin_settings.save(chosen, lambda group, name, value: store.update({(group, name): value}))
    assert all(isinstance(value, str) for value in store.values())
    loaded = plugin_settings.load(lambda group, name, default: store.get((group, name), default))
    assert loaded == chosen
    store[("tether_krita", "steps")] = "many"  # a hand-edited kritarc
    store[("tether_krita", "loras")] = "[[1, 2, 3]]"
    hand_edited = plugin_settings.load(lambda g, n, d: store.get((g, n), d))
    assert hand_edited.steps == 20 and hand_edited.loras == ()


def test_layer_names_come_from_the_prompt():
    assert Settings(prompt="  a red\n door ").layer_name == "a red door"
    assert Settings(prompt="").layer_name == "Tether repaint"
    long_name = Settings(prompt="word " * 40).layer_name
    assert len(long_name) <= plugin_settings.LAYER_NAME_LENGTH and long_name.endswith("…")
