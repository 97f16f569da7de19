"""The SDK's types (`tether.types`) to and from `tether.v1` messages, one free function per
message, for Generate, Preprocess, ListModels, GetServerInfo and Live alike.

The sync client (`tether.Client`) and the async one (`tether.aio.Client`) both build their
requests and read their replies here, so that the two cannot drift apart. The tables from
the SDK's names ("balanced", "png", ...) to the protocol's enums are here and nowhere else
in the SDK. Images are filled into the message being built, never passed to a constructor
(see `images.write` for why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from . import images
from ._proto.tether.v1 import image_pb2, tether_pb2
from .images import ImageInput
from .types import (
    BaseModel,
    Canny,
    Control,
    ControlModel,
    Depth,
    Embedding,
    Event,
    Invert,
    Limits,
    LiveConfig,
    LiveError,
    LiveEvent,
    LiveFrame,
    LiveResult,
    Lora,
    LoraModel,
    ModelList,
    Normal,
    Preprocessor,
    Progress,
    Queued,
    Result,
    ServerInfo,
    Timings,
)

CONTROL_MODES = {
    "balanced": tether_pb2.CONTROL_MODE_BALANCED,
    "prompt": tether_pb2.CONTROL_MODE_PROMPT,
    "control": tether_pb2.CONTROL_MODE_CONTROL,
}
PREVIEW_MODES = {
    "none": tether_pb2.PREVIEW_MODE_NONE,
    "fast": tether_pb2.PREVIEW_MODE_FAST,
    "full": tether_pb2.PREVIEW_MODE_FULL,
}
OUTPUT_FORMATS = {
    "raw": image_pb2.IMAGE_FORMAT_RAW,
    "png": image_pb2.IMAGE_FORMAT_PNG,
    "jpeg": image_pb2.IMAGE_FORMAT_JPEG,
    "webp": image_pb2.IMAGE_FORMAT_WEBP,
}
RESIZE_MODES = {
    "crop": tether_pb2.RESIZE_MODE_CROP_AND_RESIZE,
    "resize": tether_pb2.RESIZE_MODE_JUST_RESIZE,
    "fill": tether_pb2.RESIZE_MODE_RESIZE_AND_FILL,
}
DEPTH_BUFFERS = {
    "linear": tether_pb2.DEPTH_BUFFER_LINEAR,
    "hardware": tether_pb2.DEPTH_BUFFER_HARDWARE,
    "hardware_reversed": tether_pb2.DEPTH_BUFFER_HARDWARE_REVERSED,
    "positions": tether_pb2.DEPTH_BUFFER_POSITIONS,
}
# Seamless tiling: which edges wrap. None (unset) is no tiling.
TILINGS = {"x": tether_pb2.TILING_X, "y": tether_pb2.TILING_Y, "xy": tether_pb2.TILING_XY}
NORMAL_SPACES = {"view": tether_pb2.NORMAL_SPACE_VIEW, "world": tether_pb2.NORMAL_SPACE_WORLD}

T = TypeVar("T")

# What a scalar field takes, for the message when protobuf refuses a value: its own
# ("Value out of range: -8") names neither the field nor what would do.
_ACCEPTED = {
    FieldDescriptor.CPPTYPE_UINT32: f"a whole number from 0 to {2**32 - 1}",
    FieldDescriptor.CPPTYPE_UINT64: f"a whole number from 0 to {2**64 - 1}",
    FieldDescriptor.CPPTYPE_FLOAT: "a number",
    FieldDescriptor.CPPTYPE_BOOL: "True or False",
    FieldDescriptor.CPPTYPE_STRING: "a string",
}


def generate_request(
    prompt: str,
    *,
    negative_prompt: str = "",
    controls: Sequence[Control] = (),
    loras: Sequence[Lora] = (),
    seed: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    width: int | None = None,
    height: int | None = None,
    scheduler: str | None = None,
    init_image: ImageInput | None = None,
    strength: float | None = None,
    mask: ImageInput | None = None,
    mask_blur: float | None = None,
    tiling: str | None = None,
    upscale: float | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    model: str | None = None,
    preview: str | None = None,
    preview_every: int = 1,
    output_format: str = "raw",
) -> tether_pb2.GenerateRequest:
    """Keyword arguments of `Client.generate` -> GenerateRequest. None leaves the server's
    default (width and height 0 too: the model's size); the server validates ranges and
    names the field it refuses. `tiling` is "x", "y" or "xy" (seamless), None for none."""
    request = tether_pb2.GenerateRequest()
    _fill(
        request,
        {
            "model": model or "",
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "width": width,
            "height": height,
            "scheduler": scheduler or "",
            "strength": strength,
            "mask_blur": mask_blur,
            "tiling": _tiling(tiling),
            "upscale": upscale,
            "tile_size": tile_size,
            "tile_overlap": tile_overlap,
            "output_format": _enum(OUTPUT_FORMATS, output_format, "output_format"),
        },
    )
    _fill(
        request.preview,
        {
            "mode": _enum(PREVIEW_MODES, preview or "none", "preview"),
            "every": preview_every,
            "format": image_pb2.IMAGE_FORMAT_RAW,
        },
        "preview_",
    )
    for i, unit in enumerate(controls):
        _write_control(request.controls.add(), unit, f"controls[{i}]")
    _write_loras(request, loras)
    if init_image is not None:
        images.write(request.init_image, init_image, "init_image")
    if mask is not None:
        images.write(request.mask, mask, "mask")
    return request


def preprocess_request(
    control: Control, width: int | None, height: int | None
) -> tether_pb2.PreprocessRequest:
    request = tether_pb2.PreprocessRequest(format=image_pb2.IMAGE_FORMAT_RAW)
    _fill(request, {"width": width, "height": height})
    _write_control(request.control, control, "control")
    return request


def live_config_request(config: LiveConfig) -> tether_pb2.LiveRequest:
    """A LiveRequest carrying `config`; a wrong name or value raises ValueError naming it."""
    request = tether_pb2.LiveRequest()
    message = request.config
    message.SetInParent()
    _fill(
        message,
        {
            "model": config.model or "",
            "prompt": config.prompt,
            "negative_prompt": config.negative_prompt,
            "seed": config.seed,
            "steps": config.steps,
            "strength": config.strength,
            "guidance_scale": config.guidance_scale,
            "width": config.width,
            "height": config.height,
            "scheduler": config.scheduler or "",
            "output_format": _enum(OUTPUT_FORMATS, config.output_format, "output_format"),
            "reuse_threshold": config.reuse_threshold,
            "tiling": _tiling(config.tiling),
        },
    )
    for i, unit in enumerate(config.controls):
        _write_control(message.controls.add(), unit, f"controls[{i}]")
    _write_loras(message, config.loras)
    return request


def live_frame_request(frame: LiveFrame) -> tether_pb2.LiveRequest:
    request = tether_pb2.LiveRequest()
    message = request.frame
    _fill(message, {"id": frame.id}, "frame.")
    images.write(message.image, frame.image, "frame.image")
    for i, image in enumerate(frame.controls):
        images.write(message.controls.add(), image, f"frame.controls[{i}]")
    return request


def _write_control(unit: tether_pb2.ControlUnit, control: Control, field: str) -> None:
    _fill(
        unit,
        {
            "model": control.model,
            "weight": control.weight,
            "start": control.start,
            "end": control.end,
            "mode": _enum(CONTROL_MODES, control.mode, f"{field}.mode"),
            "resize": _enum(RESIZE_MODES, control.resize, f"{field}.resize"),
        },
        f"{field}.",
    )
    if control.image is not None:  # None in live configs: frames bring the images
        images.write(unit.image, control.image, f"{field}.image")
    if control.preprocessor is not None:
        name, values = _preprocessor(control.preprocessor, field)
        message = getattr(unit, name)  # the oneof's field, set even when its values are all 0
        message.SetInParent()
        _fill(message, values, f"{field}.{name}.")


def _write_loras(
    message: tether_pb2.GenerateRequest | tether_pb2.LiveConfig, loras: Sequence[Lora]
) -> None:
    for i, lora in enumerate(loras):
        if not isinstance(lora, Lora):
            raise TypeError(
                f"loras[{i}]: expected tether.Lora(name, weight), got {type(lora).__name__}"
            )
        _fill(message.loras.add(), {"name": lora.name, "weight": lora.weight}, f"loras[{i}].")


def _preprocessor(settings: Preprocessor, field: str) -> tuple[str, dict[str, Any]]:
    """The ControlUnit field of a preprocessor, and its values."""
    if isinstance(settings, Canny):
        return "canny", {"low": settings.low, "high": settings.high}
    if isinstance(settings, Depth):
        return "depth", {
            "buffer": _enum(DEPTH_BUFFERS, settings.buffer, f"{field}.depth.buffer"),
            "near": settings.near,
            "far": settings.far,
            "bottom_up": settings.bottom_up,
        }
    if isinstance(settings, Normal):
        return "normal", {
            "space": _enum(NORMAL_SPACES, settings.space, f"{field}.normal.space"),
            "camera_to_world": _matrix(settings.camera_to_world, f"{field}.normal.camera"),
            "y_down": settings.y_down,
            "legacy": settings.legacy,
            "bottom_up": settings.bottom_up,
        }
    if isinstance(settings, Invert):
        return "invert", {}
    raise TypeError(
        f"{field}.preprocessor: expected tether.Canny, Depth, Normal or Invert, "
        f"got {type(settings).__name__}"
    )


def _fill(message: Message, values: dict[str, Any], prefix: str = "") -> None:
    """Set fields; None leaves a field unset (the server's default), a list fills a
    repeated field."""
    for name, value in values.items():
        if value is None:
            continue
        try:
            if isinstance(value, list):
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        except (TypeError, ValueError):
            kind = message.DESCRIPTOR.fields_by_name[name].cpp_type
            accepted = _ACCEPTED.get(kind, "an enum value")
            raise ValueError(f"{prefix}{name}: expected {accepted}, got {value!r}") from None


def _enum(table: dict[str, int], name: str, field: str) -> int:
    if name not in table:
        raise ValueError(f"{field}: must be one of {', '.join(table)} (got {name!r})")
    return table[name]


def _tiling(tiling: str | None) -> int | None:
    if tiling is None:
        return None
    if tiling not in TILINGS:
        raise ValueError(
            f"tiling: must be one of {', '.join(TILINGS)}, or None for none (got {tiling!r})"
        )
    return TILINGS[tiling]


def _matrix(matrix: Any, field: str) -> list[float]:
    if matrix is None:
        return []
    values = np.asarray(matrix, dtype=np.float64)
    if values.shape != (4, 4):
        raise ValueError(
            f"{field}: expected a 4x4 camera-to-world matrix, got shape {values.shape}"
        )
    return values.reshape(16).tolist()


def event_from_proto(event: tether_pb2.GenerateEvent) -> Event:
    kind = event.WhichOneof("event")
    if kind == "queued":
        return Queued(position=event.queued.position)
    if kind == "progress":
        progress = event.progress
        preview = None
        if progress.HasField("preview"):
            preview = images.from_proto(progress.preview, "preview")[:, :, :3]
        return Progress(step=progress.step, total=progress.total, preview=preview)
    result = event.result
    return Result(
        seed=result.seed,
        timings=_copy(Timings, result.timings),
        **_picture_fields(result.image),
    )


def live_event_from_proto(event: tether_pb2.LiveEvent, dropped_here: int = 0) -> LiveEvent:
    """`dropped_here`: frames the client replaced before they were sent, added to the
    server's count so that answered + dropped = sent."""
    if event.WhichOneof("event") == "error":
        return LiveError(frame_id=event.error.frame_id, message=event.error.message)
    result = event.result
    return LiveResult(
        frame_id=result.frame_id,
        dropped=result.dropped + dropped_here,
        latency_ms=result.latency_ms,
        reused=result.reused,
        **_picture_fields(result.image),
    )


def _picture_fields(image: image_pb2.Image) -> dict[str, Any]:
    """The Picture fields of an Image message."""
    if image.WhichOneof("kind") == "raw":
        raw = image.raw
        return {"format": "raw", "data": raw.data, "width": raw.width, "height": raw.height}
    fmt = (images.encoded_format(image.encoded) or "png").lower()
    return {"format": fmt, "data": image.encoded, "width": 0, "height": 0}


def models_from_proto(response: tether_pb2.ListModelsResponse) -> ModelList:
    return ModelList(
        models=[_copy(BaseModel, model) for model in response.models],
        controls=[_copy(ControlModel, control) for control in response.controls],
        schedulers=list(response.schedulers),
        limits=_copy(Limits, response.limits),
        loras=[_copy(LoraModel, lora) for lora in response.loras],
        embeddings=[_copy(Embedding, embedding) for embedding in response.embeddings],
    )


def server_info_from_proto(info: tether_pb2.ServerInfo) -> ServerInfo:
    return ServerInfo(
        version=info.version,
        device=info.device,
        dtype=info.dtype,
        limits=_copy(Limits, info.limits),
        live_sessions=info.live_sessions,
    )


def _copy(cls: type[T], message: Message) -> T:
    """A dataclass of scalar fields named as the message's (Timings, Limits, ...)."""
    return cls(**{member.name: getattr(message, member.name) for member in fields(cls)})
