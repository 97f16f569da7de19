"""What the server offers (ListModels), remembered for the panel's model and LoRA fields.

The model and LoRA fields are text fields with a search list (a dynamic EnumProperty would
store an index that turns into another model when the server's list changes). Blender asks
for the search list while the user types, so it must come from memory, never from the
network: the operators fetch it (Refresh, Generate, ...) and store it here.
"""

from __future__ import annotations

import tether

__all__ = [
    "base_model_names",
    "control_for",
    "control_names",
    "lora_names",
    "models",
    "remember",
]

_models: tether.ModelList | None = None


def remember(model_list: tether.ModelList) -> None:
    """Store the server's answer to ListModels."""
    global _models
    _models = model_list


def models() -> tether.ModelList | None:
    """The last answer of ListModels, or None before the first successful call."""
    return _models


def base_model_names() -> list[str]:
    return [m.name for m in _models.models] if _models else []


def lora_names() -> list[str]:
    return [lora.name for lora in _models.loras] if _models else []


def control_names(kind: str) -> list[str]:
    """Names of the server's control models for maps of this kind, default first."""
    return [c.name for c in _models.controls if c.kind == kind] if _models else []


def control_for(model_list: tether.ModelList, kind: str, chosen: str) -> str | None:
    """The control model to send for a unit: ``chosen``, or with "" the server's first one
    of that kind; None when the server has no such model."""
    names = [c.name for c in model_list.controls if c.kind == kind]
    if not chosen:
        return names[0] if names else None
    return chosen if chosen in names else None
