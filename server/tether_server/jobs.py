"""What Generate and Live share in turning request messages into engine inputs."""

from __future__ import annotations

from tether._proto.tether.v1 import tether_pb2

from . import preprocess
from .engine import ControlInput
from .errors import NotFound, invalid
from .models import ModelSet

CONTROL_MODES = {
    tether_pb2.CONTROL_MODE_UNSPECIFIED: "balanced",
    tether_pb2.CONTROL_MODE_BALANCED: "balanced",
    tether_pb2.CONTROL_MODE_PROMPT: "prompt",
    tether_pb2.CONTROL_MODE_CONTROL: "control",
}


def check_model(models: ModelSet, name: str) -> None:
    """An empty name means the server's default model."""
    if name and name != models.name:
        raise NotFound(f"model: no model {name!r}; this server has {models.name!r}")


def control_kind(models: ModelSet, name: str, where: str) -> str:
    """The kind of the control model `name` (how its maps are resampled), or NotFound."""
    if name not in models.controls:
        raise NotFound(
            f"{where}.model: no control model {name!r}; this server has "
            f"{', '.join(models.controls) or 'none'}"
        )
    return models.controls[name].kind


def control_input(
    unit: tether_pb2.ControlUnit, models: ModelSet, size: tuple[int, int], where: str
) -> ControlInput:
    """A unit -> the engine's ControlInput: defaults applied, its map made at `size`."""
    if unit.mode not in CONTROL_MODES:
        raise invalid(f"{where}.mode", "must be BALANCED, PROMPT or CONTROL")
    kind = control_kind(models, unit.model, where)
    return ControlInput(
        model=unit.model,
        image=preprocess.control_map(unit, kind, size, where),
        weight=unit.weight if unit.HasField("weight") else 1.0,
        start=unit.start if unit.HasField("start") else 0.0,
        end=unit.end if unit.HasField("end") else 1.0,
        mode=CONTROL_MODES[unit.mode],
    )
