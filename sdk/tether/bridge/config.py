"""Config messages (JSON) -> `tether.LiveConfig`, every field checked.

The fields, their defaults and their JSON types are read from the SDK's own dataclasses
(`tether.LiveConfig`, `tether.Control` and the preprocessors), so a field added there is a
field of the bridge's config message (protos/bridge.md lists them). What JSON cannot say
directly is spelled out below: the lists of units and LoRAs, the preprocessor chosen by its
"type", and a matrix as 16 numbers.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import Canny, Control, Depth, Invert, LiveConfig, Lora, Normal, protocol
from .wire import ProtocolError

# "type" of a preprocessor object -> its SDK class.
PREPROCESSORS = {cls.__name__.lower(): cls for cls in (Depth, Normal, Canny, Invert)}

_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}

Reader = Callable[[Any, str], Any]  # (JSON value, field name for errors) -> field value


def config_from_json(message: Mapping[str, Any]) -> LiveConfig:
    """A config message (without its "type") -> LiveConfig; a `ProtocolError` names the
    first field that is wrong."""
    readers = {"controls": _controls, "loras": _loras}
    config = LiveConfig(**_fields(LiveConfig, message, "config", readers))
    try:
        # The SDK's own checks (output_format, modes, matrices), now.
        protocol.live_config_request(config)
    except ValueError as error:
        raise ProtocolError(f"config.{error}") from None
    return config


def _controls(value: Any, where: str) -> list[Control]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected an array, got {_show(value)}")
    return [_control(unit, f"{where}[{i}]") for i, unit in enumerate(value)]


def _loras(value: Any, where: str) -> list[Lora]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected an array, got {_show(value)}")
    return [Lora(**_fields(Lora, lora, f"{where}[{i}]", {})) for i, lora in enumerate(value)]


def _control(value: Any, where: str) -> Control:
    # Frames bring the images: a live config's units have none.
    fields = _fields(Control, value, where, {"preprocessor": _preprocessor}, skip=("image",))
    return Control(image=None, **fields)


def _preprocessor(value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {_show(value)}")
    kind = value.get("type")
    if kind not in PREPROCESSORS:
        raise ProtocolError(
            f"{where}.type: {kind!r}; expected one of {', '.join(map(repr, PREPROCESSORS))}"
        )
    cls = PREPROCESSORS[kind]
    options = {key: option for key, option in value.items() if key != "type"}
    return cls(**_fields(cls, options, where, {"camera_to_world": _matrix}))


def _matrix(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != 16 or not all(map(_is_number, value)):
        raise ProtocolError(f"{where}: expected 16 numbers (row-major 4x4)")
    return np.asarray(value, dtype=np.float64).reshape(4, 4)


def _fields(
    cls: type,
    values: Any,
    where: str,
    readers: Mapping[str, Reader],
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The keyword arguments for dataclass `cls` from a JSON object: a field in `readers` is
    read by it, any other must hold the JSON scalar its annotation names (`str | None`:
    a string). null means the default; a field without a default is required."""
    if not isinstance(values, dict):
        raise ProtocolError(f"{where}: expected an object, got {_show(values)}")
    known = {field.name: field for field in dataclasses.fields(cls) if field.name not in skip}
    types = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ProtocolError(f"{where}.{key}: unknown field; known: {', '.join(known)}")
        if value is not None:
            read = readers.get(key) or _scalar_reader(types[key])
            out[key] = read(value, f"{where}.{key}")
    for name, field in known.items():
        no_default = field.default is dataclasses.MISSING
        if no_default and field.default_factory is dataclasses.MISSING and name not in out:
            raise ProtocolError(f"{where}.{name}: required")
    return out


def _scalar_reader(annotation: Any) -> Reader:
    kinds = [kind for kind in typing.get_args(annotation) or [annotation] if kind is not type(None)]
    if len(kinds) != 1 or kinds[0] not in _JSON_NAMES:
        raise TypeError(f"the bridge has no JSON reader for the SDK's type {annotation}")
    kind = kinds[0]

    def read(value: Any, where: str) -> Any:
        if kind is int and _is_number(value) and float(value).is_integer():
            return int(value)  # GDScript's JSON writes floats such as 2.0 for some ints
        if kind is float and _is_number(value):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise ProtocolError(f"{where}: expected {_JSON_NAMES[kind]}, got {_show(value)}")

    return read


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return json.dumps(value)[:40]
