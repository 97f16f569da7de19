"""What the user chose in the docker, with its defaults, checks and persistence.

Krita keeps plugin settings as strings (`Krita.readSetting` / `writeSetting`); the
store is passed in as two functions so this module stays free of Krita.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

SETTINGS_GROUP = "tether_krita"
RANDOM_SEED = -1
LAYER_NAME_LENGTH = 48
# What a live session accepts (the server refuses more).
LIVE_STEPS = (1, 4)

ReadSetting = Callable[[str, str, str], str]  # (group, name, default) -> value
WriteSetting = Callable[[str, str, str], None]  # (group, name, value)


@dataclass(frozen=True)
class Settings:
    """The docker's parameters. `model` "" is the server's default model; `seed`
    RANDOM_SEED lets the server draw one (Live draws one per session); `context_percent` is
    the margin around the selection, in percent of its longer side, that the model sees but
    does not paint; `live_steps` are the denoising steps of each live frame."""

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
    return str(value)


def _from_text(text: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            return text.strip().lower() == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        return default
    return text
