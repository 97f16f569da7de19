"""Request messages -> engine jobs, for Generate, Live and Preprocess.

The one home of the server's request defaults, of its proto enum -> engine value tables,
and of the order in which a request is checked: everything cheap first, so that a request
is refused before it makes the server allocate memory for it.

1. Settings: defaults applied, enums converted, and the job checked by the engine
   (`Engine.check`: size and pixels, steps, prompts, unit count, models, weights, windows)
   while none of its images is made yet. An output made in tiles (`tiles`: upscale, or an
   init image over the pixel limit) is checked at its canvas size, with its tile settings.
2. Image sizes, from the message alone (a raw image's fields, an encoded file's header):
   each image at most MAX_INPUT_PIXELS; an init image or mask exactly the output size; a
   control image refused if fitting it would resample it past MAX_INPUT_PIXELS (covering
   the output with a very thin image).
3. The init image and mask decoded, and the job checked again (strength, mask).
4. The control maps made one unit at a time; only the map, at the output size, is kept.

Memory bound. One request makes the server allocate at most
- about three times its message (at most Limits.max_message_bytes): the front receives it
  (and keeps it until the call ends), an engine worker receives it and parses it (and
  keeps neither once the job is made);
- while one image is decoded and made into a map (one at a time): INPUT_BYTES_PER_PIXEL
  bytes per pixel of the larger of the image and its resampled size, both at most
  MAX_INPUT_PIXELS (1.3 GB at 4096^2). A raw image's bytes are copied once in this,
  as protobuf copies a bytes field when it is read;
- kept until the job ends: 12 bytes per output pixel (3 float32) for each unit's map and the
  init image, 4 for a mask: (12 x units + 16) x max_pixels, 117 MB for 8 units at 1024^2;
- the engine's own run at the output size.
An output made in tiles counts its canvas's pixels above (up to max_canvas_pixels) and
adds tiles.CANVAS_BYTES_PER_PIXEL to assemble it; the engine runs at the tile size.
A request refused in steps 1 and 2 allocates none of it. tests/test_service_limits.py holds
this against a real server's peak RSS. Waiting jobs keep their maps (up to
Limits.max_queue of them); requests are converted on asyncio's default thread pool, so a
few at a time.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from tether._proto.tether.v1 import image_pb2, tether_pb2

from . import images, preprocess, prompts, resize, schedulers, tiles
from .engine import ControlInput, Engine, Job
from .errors import invalid, shown
from .lora import LoraWeight

# Images a request brings may be larger than outputs (hosts send their full buffers);
# past this an image is refused before it is decoded.
MAX_INPUT_PIXELS = 4096 * 4096
# Peak bytes per pixel while one image is decoded and made into a map: measured 37 (canny on
# a PNG) to 75 (an RGBA float32 normal buffer: its copy, the conversion, a masked resample).
INPUT_BYTES_PER_PIXEL = 80


@dataclass(frozen=True)
class Defaults:
    """What a request gets for a field it leaves unset (the .proto comments say the same)."""

    steps: int
    guidance_scale: float
    strength: float
    scheduler: str


GENERATE = Defaults(
    steps=20, guidance_scale=7.5, strength=0.75, scheduler=schedulers.DEFAULT_SCHEDULER
)
# Live sessions: img2img of each frame, few steps, no guidance, a deterministic scheduler
# (stable frames).
LIVE = Defaults(steps=2, guidance_scale=1.0, strength=0.5, scheduler="euler")
LIVE_MAX_STEPS = 4
MASK_BLUR = 4.0
MAX_MASK_BLUR = 64.0
UNIT_FIELDS = ("weight", "start", "end")  # a unit's optional numbers
CANNY_THRESHOLDS = (100, 200)

CONTROL_MODES = {
    tether_pb2.CONTROL_MODE_UNSPECIFIED: "balanced",
    tether_pb2.CONTROL_MODE_BALANCED: "balanced",
    tether_pb2.CONTROL_MODE_PROMPT: "prompt",
    tether_pb2.CONTROL_MODE_CONTROL: "control",
}
RESIZE_MODES = {
    tether_pb2.RESIZE_MODE_UNSPECIFIED: "crop",
    tether_pb2.RESIZE_MODE_CROP_AND_RESIZE: "crop",
    tether_pb2.RESIZE_MODE_JUST_RESIZE: "resize",
    tether_pb2.RESIZE_MODE_RESIZE_AND_FILL: "fill",
}
PREVIEW_MODES = {
    tether_pb2.PREVIEW_MODE_UNSPECIFIED: "none",
    tether_pb2.PREVIEW_MODE_NONE: "none",
    tether_pb2.PREVIEW_MODE_FAST: "fast",
    tether_pb2.PREVIEW_MODE_FULL: "full",
}
DEPTH_BUFFERS = {
    tether_pb2.DEPTH_BUFFER_UNSPECIFIED: "linear",
    tether_pb2.DEPTH_BUFFER_LINEAR: "linear",
    tether_pb2.DEPTH_BUFFER_HARDWARE: "hardware",
    tether_pb2.DEPTH_BUFFER_HARDWARE_REVERSED: "hardware_reversed",
    tether_pb2.DEPTH_BUFFER_POSITIONS: "positions",
}
TILINGS = {
    tether_pb2.TILING_UNSPECIFIED: "none",
    tether_pb2.TILING_X: "x",
    tether_pb2.TILING_Y: "y",
    tether_pb2.TILING_XY: "xy",
}
# Large canvases (`tiles`): an upscale's img2img repaints less than an init image's by
# default, keeping the first pass's composition; the factor is bounded by the canvas limit.
UPSCALE_STRENGTH = 0.35
MAX_UPSCALE = 8.0
WORLD_SPACE = {
    tether_pb2.NORMAL_SPACE_UNSPECIFIED: False,
    tether_pb2.NORMAL_SPACE_VIEW: False,
    tether_pb2.NORMAL_SPACE_WORLD: True,
}


@dataclass(frozen=True)
class _MapOrder:
    """How one unit's map is made: converted and checked in step 1, made in step 4."""

    preprocessor: preprocess.Preprocessor
    resize: str
    where: str


def generate_job(
    request: tether_pb2.GenerateRequest, engine: Engine, check_room: Callable[[], None]
) -> Job | tiles.Canvas:
    """GenerateRequest -> a checked engine Job with its images made (steps 1-4 above), or
    a Canvas of such a Job when the output is made in tiles (upscale, or an init image
    over the pixel limit). `check_room` raises if the queue is full: called once the
    request is known to be valid (a retry could succeed) and before anything is decoded
    (no work is wasted)."""
    base = engine.registry.base(request.model)
    # 1. Settings.
    job = _settings(
        request,
        GENERATE,
        request.width or base.default_size,
        request.height or base.default_size,
    )
    job.model = base.name
    job.seed = request.seed if request.HasField("seed") else secrets.randbits(32)
    job.preview = _converted(
        PREVIEW_MODES, tether_pb2.PreviewMode, request.preview.mode, "preview.mode"
    )
    job.preview_every = max(request.preview.every, 1)
    if request.HasField("strength") and not (
        request.HasField("init_image") or request.HasField("upscale")
    ):
        raise invalid("strength", "only applies with init_image (img2img) or upscale")
    blur = request.mask_blur if request.HasField("mask_blur") else MASK_BLUR
    if not 0 <= blur <= MAX_MASK_BLUR:
        raise invalid("mask_blur", f"must be 0 to {MAX_MASK_BLUR:g} pixels (got {blur:g})")
    _add_controls(job, request.controls)
    orders = _map_orders(request.controls, "controls")
    unit_images = [unit.image for unit in request.controls]
    canvas = _canvas(request, job, engine)
    engine.check(job, canvas=canvas is not None)
    size = (job.width, job.height)
    check_format(request.output_format, "output_format", size)
    check_format(request.preview.format, "preview.format", size)
    # 2. Image sizes.
    for field in ("init_image", "mask"):
        if request.HasField(field):
            _check_output_sized(getattr(request, field), field, size)
    for image, order in zip(unit_images, orders):
        _check_fit(image, f"{order.where}.image", size, order.resize)
    # 3. The init image and mask.
    check_room()
    if request.HasField("init_image"):
        pixels = images.decode(request.init_image, "init_image", MAX_INPUT_PIXELS)
        job.init_image = images.to_rgb(pixels, "init_image")
    if request.HasField("mask"):
        job.mask = _mask(request.mask, blur)
    engine.check(job, canvas=canvas is not None)
    # 4. The control maps.
    _make_maps(job, unit_images, orders, engine)
    return job if canvas is None else canvas


def check_live_config(config: tether_pb2.LiveConfig, engine: Engine) -> None:
    """What can be checked before a frame arrives: the config's settings, with the
    smallest frame (8 pixels) standing in for a dimension the frames decide."""
    engine.registry.base(config.model)
    check_format(config.output_format, "output_format")
    _map_orders(config.controls, "controls")
    engine.check(_live_settings(config, (8, 8), engine), max_steps=LIVE_MAX_STEPS)


def live_job(config: tether_pb2.LiveConfig, frame: tether_pb2.LiveFrame, engine: Engine) -> Job:
    """A frame under a checked config -> an img2img Job: the frame's colour image cropped
    to the output size, the units' maps from the frame's images (steps 1-4 above)."""
    if len(frame.controls) != len(config.controls):
        raise invalid(
            "frame.controls",
            f"has {len(frame.controls)} image(s); the config has {len(config.controls)} unit(s), "
            "one image each, in order",
        )
    # 1. Settings, at the frame's size where the config leaves the size to the frame.
    frame_size = images.size(frame.image, "frame.image", MAX_INPUT_PIXELS)
    job = _live_settings(config, frame_size, engine)
    orders = _map_orders(config.controls, "frame.controls")
    engine.check(job, max_steps=LIVE_MAX_STEPS)
    size = (job.width, job.height)
    check_format(config.output_format, "output_format", size)
    # 2. Image sizes.
    _check_fit(frame.image, "frame.image", size, "crop")
    for image, order in zip(frame.controls, orders):
        _check_fit(image, f"{order.where}.image", size, order.resize)
    # 3. The colour image.
    colour = images.decode(frame.image, "frame.image", MAX_INPUT_PIXELS)
    job.init_image = resize.fit(images.to_rgb(colour, "frame.image"), *size, "crop", "photo")
    engine.check(job, max_steps=LIVE_MAX_STEPS)
    # 4. The control maps.
    _make_maps(job, frame.controls, orders, engine)
    return job


def preprocess_map(request: tether_pb2.PreprocessRequest, engine: Engine) -> np.ndarray:
    """The map Generate would make for the request's unit, at the requested size or at
    the image's own."""
    if bool(request.width) != bool(request.height):
        raise invalid("width", "set width and height together, or neither")
    size = (request.width, request.height) if request.width else None
    if size is not None:
        engine.check_size(*size)
    unit = request.control
    kind = engine.control_model(unit.model, "control").kind
    order = _map_order(unit, "control")
    if size is None:
        own_size = images.size(unit.image, "control.image", MAX_INPUT_PIXELS)
        check_format(request.format, "format", own_size)
    else:
        check_format(request.format, "format", size)
        _check_fit(unit.image, "control.image", size, order.resize)
    return _made_map(unit.image, order, kind, size)


def check_format(fmt: int, field: str, size: tuple[int, int] | None = None) -> None:
    """An ImageFormat a reply can be encoded in, at `size` when it is known."""
    if fmt not in image_pb2.ImageFormat.values():
        raise invalid(field, f"must be {_accepted(image_pb2.ImageFormat)}")
    largest = images.MAX_SIDES.get(fmt)
    if size is not None and largest is not None and max(size) > largest:
        name = image_pb2.ImageFormat.Name(fmt).removeprefix("IMAGE_FORMAT_")
        raise invalid(
            field,
            f"{name} holds at most {largest} pixels a side ({size[0]}x{size[1]} asked); "
            "use PNG or RAW",
        )


# -- the steps ---------------------------------------------------------------------------


def _settings(
    message: tether_pb2.GenerateRequest | tether_pb2.LiveConfig,
    defaults: Defaults,
    width: int,
    height: int,
) -> Job:
    """The fields Generate and Live share, their defaults applied; the prompt's LoRA tags
    taken out and added to the request's LoRAs."""

    def given(name: str, default: float) -> float:
        return getattr(message, name) if message.HasField(name) else default

    prompt, tags = prompts.take_loras(message.prompt, "prompt")
    negative_prompt, misplaced = prompts.take_loras(message.negative_prompt, "negative_prompt")
    if misplaced:
        raise invalid(
            "negative_prompt",
            f"{shown(misplaced[0].text)}: a LoRA changes the model for the prompt and the "
            "negative prompt alike; put it in the prompt or in loras",
        )
    loras = [
        LoraWeight(lora.name, lora.weight if lora.HasField("weight") else 1.0)
        for lora in message.loras
    ]
    loras += [LoraWeight(tag.name, tag.weight, tag.text) for tag in tags]
    return Job(
        prompt=prompt,
        negative_prompt=negative_prompt,
        loras=loras,
        steps=given("steps", defaults.steps),
        guidance_scale=given("guidance_scale", defaults.guidance_scale),
        width=width,
        height=height,
        scheduler=message.scheduler or defaults.scheduler,
        strength=given("strength", defaults.strength),
        tiling=_converted(TILINGS, tether_pb2.Tiling, message.tiling, "tiling"),
    )


def _live_settings(
    config: tether_pb2.LiveConfig, frame_size: tuple[int, int], engine: Engine
) -> Job:
    job = _settings(config, LIVE, config.width or frame_size[0], config.height or frame_size[1])
    job.model = engine.registry.base(config.model).name
    job.seed = config.seed
    _add_controls(job, config.controls)
    return job


def _canvas(request: tether_pb2.GenerateRequest, job: Job, engine: Engine) -> tiles.Canvas | None:
    """The request's canvas, or None for one pass: with an upscale, `job` becomes the
    canvas (the first pass keeps the requested size). Part of step 1: reads no image."""
    pixels = job.width * job.height
    if not request.HasField("upscale"):
        if pixels <= engine.max_pixels:
            return None
        if not request.HasField("init_image"):
            if pixels > engine.max_canvas_pixels:
                return None  # Engine.check refuses it with the one-pass limit
            raise invalid(
                "width",
                f"{job.width}x{job.height} is {pixels} pixels; this server makes at most "
                f"{engine.max_pixels} in one pass; larger images are refined in tiles: send an "
                "init_image of this size, or use upscale",
            )
        return tiles.Canvas(job, *_tile_settings(request, engine))
    factor = request.upscale
    if not 1 < factor <= MAX_UPSCALE:
        raise invalid("upscale", f"must be over 1 and at most {MAX_UPSCALE:g} (got {factor:g})")
    for field in ("init_image", "mask"):
        if request.HasField(field):
            raise invalid(
                "upscale",
                f"makes its own first pass from the prompt, not with {field}; to refine an "
                "image of your own in tiles, send it as init_image at the large size",
            )
    engine.check_size(job.width, job.height)
    first_pass = (job.width, job.height)
    width, height = (max(8, round(side * factor / 8) * 8) for side in first_pass)
    if width * height > engine.max_canvas_pixels:
        raise invalid(
            "upscale",
            f"{job.width}x{job.height} x {factor:g} is {width}x{height}, {width * height} "
            f"pixels; this server makes canvases of at most {engine.max_canvas_pixels}",
        )
    job.width, job.height = width, height
    if not request.HasField("strength"):
        job.strength = UPSCALE_STRENGTH
    return tiles.Canvas(job, *_tile_settings(request, engine), first_pass=first_pass)


def _tile_settings(request: tether_pb2.GenerateRequest, engine: Engine) -> tuple[int, int]:
    """(tile_size, tile_overlap), defaults applied: the model's native size, or the largest
    square of the pixel limit, and a quarter of it."""
    largest = math.isqrt(engine.max_pixels) // 8 * 8
    tile = request.tile_size or min(engine.registry.base(request.model).default_size, largest)
    if tile % 8 or not tiles.MIN_TILE <= tile <= largest:
        raise invalid(
            "tile_size",
            f"must be a multiple of 8 from {tiles.MIN_TILE} to {largest} (a tile is one pass, "
            f"at most {engine.max_pixels} pixels) (got {tile})",
        )
    overlap = request.tile_overlap if request.HasField("tile_overlap") else tile // 4 // 8 * 8
    if overlap % 8 or overlap > tile // 2:
        raise invalid(
            "tile_overlap",
            f"must be a multiple of 8 from 0 to {tile // 2 // 8 * 8}, half the tile size "
            f"{tile} (got {overlap})",
        )
    return tile, overlap


def _add_controls(job: Job, units: Sequence[tether_pb2.ControlUnit]) -> None:
    """The units' settings, defaults applied, as `job.controls`; their maps not made yet."""
    for i, unit in enumerate(units):
        mode = _converted(CONTROL_MODES, tether_pb2.ControlMode, unit.mode, f"controls[{i}].mode")
        # Unset: ControlInput's own, a neutral unit (full weight over every step).
        given = {name: getattr(unit, name) for name in UNIT_FIELDS if unit.HasField(name)}
        job.controls.append(ControlInput(model=unit.model, image=None, mode=mode, **given))


def _map_orders(units: Sequence[tether_pb2.ControlUnit], where: str) -> list[_MapOrder]:
    """How to make each unit's map; `where` names the units' images, e.g. "frame.controls"."""
    return [_map_order(unit, f"{where}[{i}]") for i, unit in enumerate(units)]


def _map_order(unit: tether_pb2.ControlUnit, where: str) -> _MapOrder:
    mode = _converted(RESIZE_MODES, tether_pb2.ResizeMode, unit.resize, f"{where}.resize")
    return _MapOrder(_preprocessor(unit, where), mode, where)


def _preprocessor(unit: tether_pb2.ControlUnit, where: str) -> preprocess.Preprocessor:
    """The unit's preprocessor message -> preprocess's settings, defaults applied."""
    name = unit.WhichOneof("preprocessor")
    where = f"{where}.{name}"
    if name == "canny":
        settings = unit.canny
        low = settings.low if settings.HasField("low") else CANNY_THRESHOLDS[0]
        high = settings.high if settings.HasField("high") else CANNY_THRESHOLDS[1]
        if not 0 <= low <= high <= 255:
            raise invalid(
                where, f"thresholds must satisfy 0 <= low <= high <= 255 (got {low}, {high})"
            )
        return preprocess.Canny(low, high)
    if name == "invert":
        return preprocess.Invert()
    if name == "depth":
        settings = unit.depth
        buffer = _converted(
            DEPTH_BUFFERS, tether_pb2.DepthBuffer, settings.buffer, f"{where}.buffer"
        )
        return preprocess.Depth(buffer, settings.near, settings.far, settings.bottom_up)
    if name == "normal":
        settings = unit.normal
        world = _converted(WORLD_SPACE, tether_pb2.NormalSpace, settings.space, f"{where}.space")
        camera = None
        if world:
            if len(settings.camera_to_world) != 16:
                raise invalid(
                    f"{where}.camera_to_world",
                    f"world-space normals need the camera's 4x4 world matrix as 16 floats, "
                    f"row-major (got {len(settings.camera_to_world)})",
                )
            if settings.y_down:
                raise invalid(f"{where}.y_down", "applies to view-space normals only")
            camera = np.array(settings.camera_to_world, dtype=np.float64).reshape(4, 4)
        return preprocess.Normal(camera, settings.y_down, settings.legacy, settings.bottom_up)
    return None


def _check_output_sized(image: image_pb2.Image, field: str, size: tuple[int, int]) -> None:
    width, height = images.size(image, field, MAX_INPUT_PIXELS)
    if (width, height) != size:
        raise invalid(field, f"is {width}x{height}; must be the output size {size[0]}x{size[1]}")


def _check_fit(image: image_pb2.Image, field: str, size: tuple[int, int], mode: str) -> None:
    """An image's size, and the size that fitting it to the output resamples it to."""
    width, height = images.size(image, field, MAX_INPUT_PIXELS)
    scaled_w, scaled_h = resize.scaled_size(width, height, *size, mode)
    if scaled_w * scaled_h > MAX_INPUT_PIXELS:
        raise invalid(
            field,
            f"a {width}x{height} image covers {size[0]}x{size[1]} only resampled to "
            f"{scaled_w}x{scaled_h}, over this server's limit of {MAX_INPUT_PIXELS} pixels; "
            "send an image of a nearer aspect ratio, or resize JUST_RESIZE or RESIZE_AND_FILL",
        )


def _mask(image: image_pb2.Image, blur: float) -> np.ndarray:
    """The mask as (H, W) float32 in [0, 1], its edge blurred."""
    grey = images.to_rgb(images.decode(image, "mask", MAX_INPUT_PIXELS), "mask").mean(axis=2)
    if blur > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigmaX=blur)
    return np.ascontiguousarray(grey, dtype=np.float32)


def _make_maps(
    job: Job, unit_images: Sequence[image_pb2.Image], orders: list[_MapOrder], engine: Engine
) -> None:
    size = (job.width, job.height)
    for control, image, order in zip(job.controls, unit_images, orders):
        kind = engine.control_model(control.model, order.where).kind
        control.image = _made_map(image, order, kind, size)


def _made_map(
    image: image_pb2.Image, order: _MapOrder, kind: str, size: tuple[int, int] | None
) -> np.ndarray:
    pixels = images.decode(image, f"{order.where}.image", MAX_INPUT_PIXELS)
    return preprocess.control_map(pixels, order.preprocessor, kind, size, order.resize, order.where)


def _converted(table: dict, enum: EnumTypeWrapper, value: int, field: str):
    """table[value], or InvalidArgument naming the enum's accepted values."""
    if value not in table:
        raise invalid(field, f"must be {_accepted(enum)}")
    return table[value]


def _accepted(enum: EnumTypeWrapper) -> str:
    """An enum's values less its prefix and UNSPECIFIED, e.g. "BALANCED, PROMPT or CONTROL"."""
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")
    names = [name.removeprefix(prefix) for name in enum.keys()[1:]]
    return f"{', '.join(names[:-1])} or {names[-1]}"
