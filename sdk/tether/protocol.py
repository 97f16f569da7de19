"""The SDK's types and how they map to `tether.v1` messages.

The sync client (`tether.Client`) and the async one (`tether.aio.Client`) both build their
requests and read their replies here, so that the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import images
from ._proto.tether.v1 import image_pb2, tether_pb2
from .images import ImageInput

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
_EXTENSIONS = {"png": (".png",), "jpeg": (".jpg", ".jpeg"), "webp": (".webp",)}
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
NORMAL_SPACES = {"view": tether_pb2.NORMAL_SPACE_VIEW, "world": tether_pb2.NORMAL_SPACE_WORLD}


@dataclass(frozen=True)
class Canny:
    """Edges of a colour image, on the server (OpenCV), thresholds on 8-bit values."""

    low: int = 100
    high: int = 200


@dataclass(frozen=True)
class Depth:
    """A renderer's depth buffer, converted on the server with `tether.maps`.

    buffer: "linear" (view depth; `far` optionally marks background), "hardware" or
    "hardware_reversed" ([0, 1] depth; needs near and far) or "positions" (view-space XYZ).
    """

    buffer: str = "linear"
    near: float = 0.0
    far: float = 0.0
    bottom_up: bool = False


@dataclass(frozen=True)
class Normal:
    """A renderer's normal buffer, converted on the server with `tether.maps`.

    space: "view" (+X right, +Y up, +Z toward the viewer) or "world" with
    `camera_to_world`, the camera's 4x4 world matrix.
    """

    space: str = "view"
    camera_to_world: Any = None
    y_down: bool = False
    legacy: bool = False
    bottom_up: bool = False


@dataclass(frozen=True)
class Invert:
    """1 - value: black-on-white line art to white-on-black line maps."""


Preprocessor = Canny | Depth | Normal | Invert


@dataclass
class Control:
    """One ControlNet unit: a control model name (see `Client.models()`) and its image.

    `image` is the control map in the model's convention, or what `preprocessor` turns
    into one on the server: a numpy array (uint8, or float sent without 8-bit loss),
    PNG/JPEG/WebP bytes, a path or a PIL image. Another size than the output is fitted by
    `resize`: "crop" (cover and crop the centre), "resize" (stretch) or "fill" (fit inside,
    fill the borders). `weight` in [0, 2]; the unit acts from `start` to `end` (fractions
    of the steps); `mode` is "balanced", "prompt" (the prompt matters more) or "control"
    (the control matters more).

    One line per unit from what a host has: `Control.depth(zbuffer, near=0.1, far=100)`,
    `Control.normal(normals, space="world", camera=matrix)`, `Control.canny(photo)`.
    """

    model: str
    image: ImageInput
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: str = "balanced"
    preprocessor: Preprocessor | None = None
    resize: str = "crop"

    @classmethod
    def canny(
        cls,
        image: ImageInput,
        *,
        low: int = 100,
        high: int = 200,
        model: str = "canny",
        **unit: Any,
    ) -> Control:
        """Edges of a colour image, found on the server. `unit`: weight, start, end, mode,
        resize."""
        return cls(model, image, preprocessor=Canny(low, high), **unit)

    @classmethod
    def depth(
        cls,
        buffer: np.ndarray,
        *,
        near: float | None = None,
        far: float | None = None,
        reversed_z: bool = False,
        positions: bool = False,
        bottom_up: bool = False,
        model: str = "depth",
        **unit: Any,
    ) -> Control:
        """A depth buffer as the renderer has it, converted on the server: linear view
        depth (optionally `far` marks the background), a hardware [0, 1] buffer when `near`
        and `far` are given (`reversed_z` for reversed-Z), or view-space positions."""
        if positions:
            kind = "positions"
        elif near is not None:
            kind = "hardware_reversed" if reversed_z else "hardware"
        else:
            kind = "linear"
        settings = Depth(kind, near or 0.0, far or 0.0, bottom_up)
        return cls(model, _float_buffer(buffer), preprocessor=settings, **unit)

    @classmethod
    def normal(
        cls,
        normals: np.ndarray,
        *,
        space: str = "view",
        camera: Any = None,
        y_down: bool = False,
        legacy: bool = False,
        bottom_up: bool = False,
        model: str = "normal",
        **unit: Any,
    ) -> Control:
        """A normal buffer (signed, 3 or 4 channels), converted on the server: view space,
        or world space with `camera`, the camera's 4x4 world matrix (camera to world, e.g.
        Blender's camera.matrix_world)."""
        settings = Normal(space, camera, y_down, legacy, bottom_up)
        return cls(model, _float_buffer(normals), preprocessor=settings, **unit)

    def to_proto(self, field: str = "control") -> tether_pb2.ControlUnit:
        unit = tether_pb2.ControlUnit()
        self.write(unit, field)
        return unit

    def write(self, unit: tether_pb2.ControlUnit, field: str = "control") -> None:
        """Fill `unit`, a field of a request being built (see `images.write` for why)."""
        if self.mode not in CONTROL_MODES:
            raise ValueError(f"{field}.mode: must be one of {', '.join(CONTROL_MODES)}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"{field}.resize: must be one of {', '.join(RESIZE_MODES)}")
        unit.model = self.model
        unit.weight = self.weight
        unit.start = self.start
        unit.end = self.end
        unit.mode = CONTROL_MODES[self.mode]
        unit.resize = RESIZE_MODES[self.resize]
        if self.image is not None:  # None in live configs: frames bring the images
            images.write(unit.image, self.image, f"{field}.image")
        settings = self.preprocessor
        if isinstance(settings, Canny):
            unit.canny.CopyFrom(tether_pb2.CannyPreprocessor(low=settings.low, high=settings.high))
        elif isinstance(settings, Depth):
            if settings.buffer not in DEPTH_BUFFERS:
                raise ValueError(f"{field}.depth.buffer: must be one of {', '.join(DEPTH_BUFFERS)}")
            unit.depth.CopyFrom(
                tether_pb2.DepthPreprocessor(
                    buffer=DEPTH_BUFFERS[settings.buffer],
                    near=settings.near,
                    far=settings.far,
                    bottom_up=settings.bottom_up,
                )
            )
        elif isinstance(settings, Normal):
            if settings.space not in NORMAL_SPACES:
                raise ValueError(f"{field}.normal.space: must be one of {', '.join(NORMAL_SPACES)}")
            unit.normal.CopyFrom(
                tether_pb2.NormalPreprocessor(
                    space=NORMAL_SPACES[settings.space],
                    camera_to_world=_matrix(settings.camera_to_world, f"{field}.normal.camera"),
                    y_down=settings.y_down,
                    legacy=settings.legacy,
                    bottom_up=settings.bottom_up,
                )
            )
        elif isinstance(settings, Invert):
            unit.invert.SetInParent()


def _float_buffer(buffer: Any) -> np.ndarray:
    """Buffers travel as floats: an integer buffer would be read as 8-bit colour."""
    array = np.asarray(buffer)
    return array if array.dtype.kind == "f" else array.astype(np.float32)


def _matrix(matrix: Any, field: str) -> list[float]:
    if matrix is None:
        return []
    values = np.asarray(matrix, dtype=np.float64)
    if values.shape != (4, 4):
        raise ValueError(
            f"{field}: expected a 4x4 camera-to-world matrix, got shape {values.shape}"
        )
    return values.reshape(16).tolist()


@dataclass(frozen=True)
class Queued:
    """The job waits; `position` jobs are ahead of it."""

    position: int


@dataclass(frozen=True)
class Progress:
    """A step finished. `preview` is an (h, w, 3) uint8 array when one was due."""

    step: int
    total: int
    preview: np.ndarray | None


@dataclass(frozen=True)
class Timings:
    """Where the time of a job went, in milliseconds."""

    queued_ms: float
    prepare_ms: float
    denoise_ms: float
    decode_ms: float
    total_ms: float
    batch_size: int


@dataclass(frozen=True)
class Picture:
    """An image as the server sent it: `image` gives its pixels, `data` the bytes."""

    format: str  # "raw", "png", "jpeg" or "webp"
    data: bytes  # the encoded file, or RGB8 pixels for "raw"
    width: int  # of a raw image; 0 for encoded files, whose header says
    height: int

    @property
    def image(self) -> np.ndarray:
        """(height, width, 3) uint8. Encoded formats are decoded with pillow."""
        if self.format == "raw":
            pixels = np.frombuffer(self.data, dtype=np.uint8)
            return pixels.reshape(self.height, self.width, 3)
        return images.from_proto(image_pb2.Image(encoded=self.data), "result")

    def save(self, path: str | Path) -> Path:
        """Write the image; the file's extension picks the format (pillow needed unless it
        matches the format the server sent)."""
        path = Path(path)
        if path.suffix.lower() in _EXTENSIONS.get(self.format, ()):
            path.write_bytes(self.data)
            return path
        try:
            from PIL import Image as PILImage
        except ImportError as error:
            raise ImportError(
                f"saving {path.name} needs pillow (pip install pillow), or ask the server for "
                f"output_format matching {path.suffix}"
            ) from error
        PILImage.fromarray(self.image).save(path)
        return path


@dataclass(frozen=True)
class Result(Picture):
    """The finished image of a generation, with the seed used and where the time went."""

    seed: int
    timings: Timings


def picture_fields(image: image_pb2.Image) -> dict[str, Any]:
    """The Picture fields of an Image message."""
    if image.WhichOneof("kind") == "raw":
        raw = image.raw
        return {"format": "raw", "data": raw.data, "width": raw.width, "height": raw.height}
    fmt = (images.encoded_format(image.encoded) or "png").lower()
    return {"format": fmt, "data": image.encoded, "width": 0, "height": 0}


Event = Queued | Progress | Result


def progress_callback(
    on_progress: Callable[[Progress], None] | None,
) -> Callable[[Event], None] | None:
    """`Stream.result`'s `on_event` from `generate`'s `on_progress`: Progress events only."""
    if on_progress is None:
        return None

    def on_event(event: Event) -> None:
        if isinstance(event, Progress):
            on_progress(event)

    return on_event


@dataclass(frozen=True)
class Limits:
    """What a request must stay within on this server."""

    max_pixels: int
    max_steps: int
    max_controls: int
    max_queue: int
    max_batch: int
    max_message_bytes: int


@dataclass(frozen=True)
class BaseModel:
    name: str
    family: str
    default_width: int
    default_height: int


@dataclass(frozen=True)
class ControlModel:
    name: str
    kind: str


@dataclass(frozen=True)
class ModelList:
    """What `Client.models()` returns. The first model and scheduler are the defaults."""

    models: list[BaseModel]
    controls: list[ControlModel]
    schedulers: list[str]
    limits: Limits


@dataclass(frozen=True)
class ServerInfo:
    version: str
    device: str
    dtype: str
    limits: Limits
    live_sessions: int


def generate_request(
    prompt: str,
    *,
    negative_prompt: str = "",
    controls: Sequence[Control] = (),
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
    model: str | None = None,
    preview: str | None = None,
    preview_every: int = 1,
    output_format: str = "raw",
) -> tether_pb2.GenerateRequest:
    """Keyword arguments of `Client.generate` -> GenerateRequest. None leaves the server's
    default; the server validates ranges and names the field it refuses."""
    if preview is not None and preview not in PREVIEW_MODES:
        raise ValueError(f"preview: must be one of {', '.join(PREVIEW_MODES)} or None")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format: must be one of {', '.join(OUTPUT_FORMATS)}")
    request = tether_pb2.GenerateRequest(
        model=model or "",
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width or 0,
        height=height or 0,
        scheduler=scheduler or "",
        preview=tether_pb2.PreviewOptions(
            mode=PREVIEW_MODES[preview] if preview else tether_pb2.PREVIEW_MODE_NONE,
            every=preview_every,
            format=image_pb2.IMAGE_FORMAT_RAW,
        ),
        output_format=OUTPUT_FORMATS[output_format],
    )
    for name, value in (
        ("seed", seed),
        ("steps", steps),
        ("guidance_scale", guidance_scale),
        ("strength", strength),
        ("mask_blur", mask_blur),
    ):
        if value is not None:
            setattr(request, name, value)
    for i, unit in enumerate(controls):
        unit.write(request.controls.add(), f"controls[{i}]")
    if init_image is not None:
        images.write(request.init_image, init_image, "init_image")
    if mask is not None:
        images.write(request.mask, mask, "mask")
    return request


def preprocess_request(
    control: Control, width: int | None, height: int | None
) -> tether_pb2.PreprocessRequest:
    request = tether_pb2.PreprocessRequest(
        width=width or 0, height=height or 0, format=image_pb2.IMAGE_FORMAT_RAW
    )
    control.write(request.control, "control")
    return request


def event_from_proto(event: tether_pb2.GenerateEvent) -> Event:
    kind = event.WhichOneof("event")
    if kind == "queued":
        return Queued(position=event.queued.position)
    if kind == "progress":
        progress = event.progress
        preview = None
        if progress.HasField("preview"):
            preview = _rgb(images.from_proto(progress.preview, "preview"))
        return Progress(step=progress.step, total=progress.total, preview=preview)
    result = event.result
    timings = result.timings
    return Result(
        seed=result.seed,
        timings=Timings(
            queued_ms=timings.queued_ms,
            prepare_ms=timings.prepare_ms,
            denoise_ms=timings.denoise_ms,
            decode_ms=timings.decode_ms,
            total_ms=timings.total_ms,
            batch_size=timings.batch_size,
        ),
        **picture_fields(result.image),
    )


def _rgb(array: np.ndarray) -> np.ndarray:
    return array if array.shape[2] == 3 else array[:, :, :3]


def limits_from_proto(limits: tether_pb2.Limits) -> Limits:
    return Limits(
        max_pixels=limits.max_pixels,
        max_steps=limits.max_steps,
        max_controls=limits.max_controls,
        max_queue=limits.max_queue,
        max_batch=limits.max_batch,
        max_message_bytes=limits.max_message_bytes,
    )


def models_from_proto(response: tether_pb2.ListModelsResponse) -> ModelList:
    return ModelList(
        models=[
            BaseModel(m.name, m.family, m.default_width, m.default_height) for m in response.models
        ],
        controls=[ControlModel(c.name, c.kind) for c in response.controls],
        schedulers=list(response.schedulers),
        limits=limits_from_proto(response.limits),
    )


def server_info_from_proto(info: tether_pb2.ServerInfo) -> ServerInfo:
    return ServerInfo(
        version=info.version,
        device=info.device,
        dtype=info.dtype,
        limits=limits_from_proto(info.limits),
        live_sessions=info.live_sessions,
    )
