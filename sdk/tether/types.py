"""The SDK's types: what a host builds (Control, LiveConfig, LiveFrame) and what it gets back
(events, results, model lists). Every public one is importable from `tether` itself.

These are plain dataclasses; `tether.protocol` converts them to and from `tether.v1`
messages. Their field defaults are the SDK's defaults, defined here and nowhere else (the
bridge derives its config schema from them). A field left None is filled in by the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import images
from .images import ImageInput

# The file extensions of the encoded formats a result may come in.
FORMATS_BY_EXTENSION = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


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
        low: int = Canny.low,
        high: int = Canny.high,
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
        settings = Depth(kind, near or Depth.near, far or Depth.far, bottom_up)
        return cls(model, _float_buffer(buffer), preprocessor=settings, **unit)

    @classmethod
    def normal(
        cls,
        normals: np.ndarray,
        *,
        space: str = Normal.space,
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


@dataclass(frozen=True)
class Lora:
    """A LoRA to apply, by a name from `Client.models().loras`. `weight` in [-10, 10]
    (negative: the other way). A prompt's `<lora:NAME:WEIGHT>` tags add to these."""

    name: str
    weight: float = 1.0


def _float_buffer(buffer: Any) -> np.ndarray:
    """Buffers travel as floats: an integer buffer would be read as 8-bit colour."""
    array = np.asarray(buffer)
    return array if array.dtype.kind == "f" else array.astype(np.float32)


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


@dataclass(frozen=True, repr=False)
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
        return images.decode(self.data, "result")

    def save(self, path: str | Path) -> Path:
        """Write the image; the file's extension picks the format (pillow needed unless it
        matches the format the server sent)."""
        path = Path(path)
        if FORMATS_BY_EXTENSION.get(path.suffix.lower()) == self.format:
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

    def __repr__(self) -> str:
        """Every field but the bytes, which would fill a screen: their size instead."""
        shown = [
            f"data=<{len(self.data)} bytes>"
            if f.name == "data"
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class Result(Picture):
    """The finished image of a generation, with the seed used and where the time went."""

    seed: int
    timings: Timings


Event = Queued | Progress | Result


@dataclass(frozen=True)
class Limits:
    """What a request must stay within on this server."""

    max_pixels: int
    max_steps: int
    max_controls: int
    max_queue: int
    max_batch: int
    max_message_bytes: int
    max_canvas_pixels: int  # an output made in tiles; each tile is at most max_pixels


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
class LoraModel:
    """A LoRA the server can apply: `Lora(name, weight)` or `<lora:NAME:WEIGHT>` in a prompt."""

    name: str


@dataclass(frozen=True)
class Embedding:
    """A textual-inversion embedding: its name, written in a prompt as a word, stands for
    its vectors."""

    name: str


@dataclass(frozen=True)
class ModelList:
    """What `Client.models()` returns. The first model and scheduler are the defaults."""

    models: list[BaseModel]
    controls: list[ControlModel]
    schedulers: list[str]
    limits: Limits
    loras: list[LoraModel]
    embeddings: list[Embedding]


@dataclass(frozen=True)
class ServerInfo:
    version: str
    device: str
    dtype: str
    limits: Limits
    live_sessions: int


@dataclass
class LiveConfig:
    """Settings of a live session. `controls` are units without images (image=None): each
    frame brings one image per unit, in order. steps 1 to 4; steps x strength must leave at
    least one step; guidance_scale <= 1 runs without classifier-free guidance (fast);
    width/height 0 take the frame's size; reuse_threshold > 0 lets a frame that differs from
    the last processed one by less (mean absolute difference, 0..1) reuse its output;
    `loras` as for `Client.generate`; tiling "x", "y" or "xy" makes every result tile
    seamlessly (None: no tiling)."""

    prompt: str
    negative_prompt: str = ""
    controls: Sequence[Control] = ()
    steps: int = 2
    strength: float = 0.5
    seed: int = 0
    guidance_scale: float = 1.0
    width: int = 0
    height: int = 0
    scheduler: str | None = None
    output_format: str = "raw"
    reuse_threshold: float = 0.0
    model: str | None = None
    loras: Sequence[Lora] = ()
    tiling: str | None = None


@dataclass
class LiveFrame:
    """One frame: its id (results name it), its colour image and one image per unit."""

    id: int
    image: ImageInput
    controls: Sequence[ImageInput] = field(default_factory=tuple)


@dataclass(frozen=True, repr=False)
class LiveResult(Picture):
    """The image for frame `frame_id`. `dropped`: frames of the session replaced by newer
    ones before they were processed; `latency_ms`: from the frame reaching the server to
    the result leaving it; `reused`: the previous output, sent again."""

    frame_id: int
    dropped: int
    latency_ms: float
    reused: bool


@dataclass(frozen=True)
class LiveError:
    """Frame `frame_id` (0: a config) could not be processed; the session goes on."""

    frame_id: int
    message: str


LiveEvent = LiveResult | LiveError
