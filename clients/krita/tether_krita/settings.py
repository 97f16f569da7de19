"""What the user chose in the docker, with its defaults, checks and persistence.

Krita keeps plugin settings as strings (`Krita.readSetting` / `writeSetting`); the
store is passed in as two functions so this module stays free of Krita.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import tether

SETTINGS_GROUP = "tether_krita"
RANDOM_SEED = -1
LAYER_NAME_LENGTH = 48
# What a live session accepts (the server refuses more).
LIVE_STEPS = (1, 4)
# Seamless tiling: "" none, else the axes that wrap (the server's `tiling`).
TILINGS = ("", "x", "y", "xy")
# What the server accepts as a LoRA's weight.
LORA_WEIGHTS = (-10.0, 10.0)

ReadSetting = Callable[[str, str, str], str]  # (group, name, default) -> value
WriteSetting = Callable[[str, str, str], None]  # (group, name, value)


@dataclass(frozen=True)
class Settings:
    """The docker's parameters. `model` "" is the server's default model; `seed`
    RANDOM_SEED lets the server draw one (Live draws one per session); `context_percent` is
    the margin around the selection, in percent of its longer side, that the model sees but
    does not paint; `live_steps` are the denoising steps of each live frame; `loras` are
    applied to every repaint and live frame; `tiling` (one of TILINGS) makes the result
    wrap around the canvas's edges, and a repaint with it reads the whole canvas."""

    address: str = "127.0.0.1:50051"
    token: str = ""
    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 0.8
    edge_weight: float = 1.0
    edge_low: int = 100
    edge_high: int = 200
    steps: int = 20
    seed: int = RANDOM_SEED
    show_edges: bool = False
    context_percent: int = 25
    live_steps: int = 2
    loras: tuple[tether.Lora, ...] = ()
    tiling: str = ""

    def problem(self) -> str | None:
        """A message for the user when these settings cannot make a request, else None.
        Limits that depend on the server (steps, size) are the server's to check."""
        if not self.address.strip():
            return "Enter the address of the Tether server, e.g. 127.0.0.1:50051."
        if not 0.0 < self.strength <= 1.0:
            return "Strength must be above 0 and at most 1."
        if not 0.0 <= self.edge_weight <= 2.0:
            return "Edge weight must be between 0 and 2."
        if not 0 <= self.edge_low <= self.edge_high <= 255:
            return "Edge thresholds must satisfy 0 <= low <= high <= 255."
        if self.steps < 1:
            return "Steps must be at least 1."
        if self.seed < RANDOM_SEED:
            return "Seed must be 0 or more (or random)."
        if self.context_percent < 0:
            return "The context margin cannot be negative."
        if self.tiling not in TILINGS:
            return f"Tiling must be none, x, y or xy (got {self.tiling!r})."
        low, high = LORA_WEIGHTS
        names = [lora.name for lora in self.loras]
        for lora in self.loras:
            if not low <= lora.weight <= high:
                return f"The weight of LoRA {lora.name!r} must be between {low:g} and {high:g}."
            if names.count(lora.name) > 1:
                return f"LoRA {lora.name!r} is chosen twice: pick each LoRA once."
        return None

    def live_problem(self) -> str | None:
        """Like `problem`, for a live session."""
        low, high = LIVE_STEPS
        if not low <= self.live_steps <= high:
            return f"Live steps must be {low} to {high}."
        return self.problem()

    @property
    def layer_name(self) -> str:
        """The result layer's name: the prompt's first line, shortened."""
        prompt = " ".join(self.prompt.split())
        if not prompt:
            return "Tether repaint"
        if len(prompt) > LAYER_NAME_LENGTH:
            prompt = prompt[: LAYER_NAME_LENGTH - 1].rstrip() + "…"
        return prompt


def load(read: ReadSetting) -> Settings:
    """Settings from Krita's store; unreadable values fall back to their defaults."""
    defaults = Settings()
    values = {}
    for field in fields(Settings):
        default = getattr(defaults, field.name)
        text = read(SETTINGS_GROUP, field.name, _to_text(default))
        values[field.name] = _from_text(text, default)
    return replace(defaults, **values)


def save(settings: Settings, write: WriteSetting) -> None:
    for field in fields(Settings):
        write(SETTINGS_GROUP, field.name, _to_text(getattr(settings, field.name)))


def _to_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):  # the LoRAs, as [[name, weight], ...]
        return json.dumps([[lora.name, lora.weight] for lora in value])
    return str(value)


def _from_text(text: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            return text.strip().lower() == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(tether.Lora(str(name), float(weight)) for name, weight in json.loads(text))
    except (ValueError, TypeError):
        return default
    return text
