"""One repaint, from a snapshot of the canvas to the bytes of the result layer.

Runs on a worker thread (a `tether.background.Job`) and never touches Krita: the GUI
thread takes a `Snapshot` (raw bytes read from the document), the job does every
conversion and every server call, and hands back events whose pixels are ready for
`Node.setPixelData`. That keeps Krita's API on the thread it belongs to and the UI
responsive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tether
from tether import background
from tether.background import UserError

from . import masks, pixels
from .geometry import Rect, canvas_size, generation_size
from .messages import describe
from .pixels import PixelFormat
from .resize import resize
from .settings import RANDOM_SEED, Settings

# Unary calls answer in well under a second on a healthy server; waiting longer only
# hides a wedged one. Generation has no timeout: it may queue behind other users.
MODELS_TIMEOUT_S = 20.0
PREPROCESS_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Snapshot:
    """What the GUI thread read from the document for one repaint: the `region` of the
    visible image (projection) as raw bytes in `fmt`, and the selection's bytes over the
    same region (None: no selection, repaint it all)."""

    region: Rect
    pixels: bytes
    selection: bytes | None
    fmt: PixelFormat


@dataclass(frozen=True)
class Prepared:
    """The request-side data of a repaint, at the size it is sent at."""

    width: int
    height: int
    image: np.ndarray  # (height, width, 3) uint8 sRGB: the init image
    mask: np.ndarray  # (height, width) uint8, 255 = repaint
    coverage: np.ndarray  # (region h, region w) float32 selection coverage, for the layer
    model: str  # base model name, "" for the server's default
    canny_model: str  # the server's control model of kind "canny"
    # The (width, height) of the image's top-left part that shows the region: all of it,
    # or less when a canvas was padded to multiples of 8 (the rest repeats its edge).
    content: tuple[int, int]
    note: str  # how the region was sent, for the user ("" for one pass)


@dataclass(frozen=True)
class StatusChanged:
    text: str


@dataclass(frozen=True)
class EdgesReady:
    """The canny map the request uses, as layer bytes over the region (opaque)."""

    pixels: bytes


@dataclass(frozen=True)
class PreviewReady:
    step: int
    total: int
    pixels: bytes | None  # layer bytes over the region; None when no preview came


@dataclass(frozen=True)
class Repainted:
    """What a repaint's `background.Done` carries: the result layer over the region,
    transparent outside the selection, the seed the server used, and how the region was
    sent (`Prepared.note`)."""

    pixels: bytes
    seed: int
    note: str = ""


def prepare(
    snapshot: Snapshot, settings: Settings, models: tether.ModelList, tiles: bool = True
) -> Prepared:
    """Choose the size and model, and fit image and mask to that size. A region within the
    server's one-pass limit (`max_pixels`) is scaled to the model's own size (and the
    result back); a larger one, when `tiles` allows, is sent at full resolution, up to the
    server's canvas limit, for the server to refine in tiles. Raises UserError when the
    server lacks what the repaint needs."""
    base = _base_model(models, settings.model)
    canny = next((c.name for c in models.controls if c.kind == "canny"), None)
    if canny is None:
        raise UserError(
            "The Tether server offers no canny control model, which Repaint and Live need."
        )
    _check_loras(models, settings.loras)
    region, limits = snapshot.region, models.limits
    if snapshot.selection is None:
        coverage = masks.full_mask(region.width, region.height)
    else:
        coverage = masks.selection_mask(snapshot.selection, region.width, region.height)
    padded, note = False, ""
    if not tiles or region.width * region.height <= limits.max_pixels:
        width, height = generation_size(
            region.width, region.height, base.default_width, base.default_height, limits.max_pixels
        )
    else:
        width, height = canvas_size(region.width, region.height, limits.max_canvas_pixels)
        if width < region.width or height < region.height:
            note = (
                f"Sent at {width}×{height}, scaled down from {region.width}×{region.height}: "
                f"the server refines canvases of at most {limits.max_canvas_pixels} pixels."
            )
        else:
            note = f"Sent at full resolution, {region.width}×{region.height}, refined in tiles."
            # Padding would sit between the edges that tiling makes meet: stretched instead.
            padded = not settings.tiling
    if padded:
        # Padded to multiples of 8 by repeating the edge, outside the mask: the region's
        # own pixels go through unresampled.
        pad = ((0, height - region.height), (0, width - region.width))
        own = model_image(snapshot.pixels, region, snapshot.fmt, region.width, region.height)
        image = np.pad(own, (*pad, (0, 0)), mode="edge")
        mask = np.pad(masks.to_uint8(coverage), pad)
        content = (region.width, region.height)
    else:
        image = model_image(snapshot.pixels, region, snapshot.fmt, width, height)
        mask = masks.to_uint8(resize(coverage, width, height))
        content = (width, height)
    return Prepared(width, height, image, mask, coverage, settings.model, canny, content, note)


def model_image(data: bytes, region: Rect, fmt: PixelFormat, width: int, height: int) -> np.ndarray:
    """Krita bytes over `region` -> the (height, width, 3) uint8 sRGB image the model gets,
    transparent parts over white paper."""
    rgba = pixels.decode(data, region.width, region.height, fmt)
    return masks.to_uint8(resize(pixels.flatten(rgba), width, height))


def layer_bytes(image: np.ndarray, plan: Prepared, fmt: PixelFormat) -> bytes:
    """A picture from the server (uint8 RGB at the plan's size, or a preview at a fraction
    of it) as a layer's bytes over the region, masked to the selection."""
    rgb = _content(image, plan).astype(np.float32) / 255
    return pixels.encode(masks.layer_pixels(rgb, plan.coverage), fmt)


def _content(image: np.ndarray, plan: Prepared) -> np.ndarray:
    """The part of `image` (the plan's size, or a preview at a fraction of it) that shows
    the region: all of it unless the plan padded the region."""
    scale = image.shape[1] / plan.width
    width, height = plan.content
    return image[: max(1, round(height * scale)), : max(1, round(width * scale))]


def repaint_job(client: Any, snapshot: Snapshot, settings: Settings) -> background.Job:
    """One repaint as a background job (not started) that closes `client` when it ends.
    Its events: StatusChanged, EdgesReady and PreviewReady, then `background.Done`
    with `Repainted`, `background.Failed` or `background.Stopped`."""

    def work(task: background.Task) -> Repainted:
        try:
            return _repaint(task, client, snapshot, settings)
        finally:
            client.close()

    return background.Job(
        work, describe=lambda error: describe(error, settings.address), name="tether-repaint"
    )


def _repaint(
    task: background.Task, client: Any, snapshot: Snapshot, settings: Settings
) -> Repainted:
    region, fmt = snapshot.region, snapshot.fmt
    task.emit(StatusChanged("Asking the server for its models…"))
    models = client.models(timeout=MODELS_TIMEOUT_S)
    plan = prepare(snapshot, settings, models)
    task.raise_if_cancelled()

    # The server finds the edges (OpenCV canny) in the init image itself; they are only
    # fetched to show them, through Preprocess, which gives the very map Generate uses
    # for the same unit.
    edges = tether.Control.canny(
        plan.image,
        low=settings.edge_low,
        high=settings.edge_high,
        model=plan.canny_model,
        weight=settings.edge_weight,
    )
    if settings.show_edges:
        task.emit(StatusChanged("Finding edges…"))
        edge_map = client.preprocess(edges, timeout=PREPROCESS_TIMEOUT_S)  # at the image's size
        layer = masks.edges_pixels(_content(edge_map, plan), region.width, region.height)
        task.emit(EdgesReady(pixels.encode(layer, fmt)))
        task.raise_if_cancelled()

    def on_event(event: tether.Queued | tether.Progress) -> None:
        if isinstance(event, tether.Queued):
            task.emit(StatusChanged(f"Queued: {event.position} job(s) ahead"))
        else:
            preview = None
            if event.preview is not None:
                preview = layer_bytes(event.preview, plan, fmt)
            task.emit(PreviewReady(event.step, event.total, preview))

    task.emit(StatusChanged(f"Sending the request… {plan.note}".strip()))
    result = task.generate(
        client,
        settings.prompt,
        on_event=on_event,
        negative_prompt=settings.negative_prompt,
        controls=[edges],
        seed=None if settings.seed == RANDOM_SEED else settings.seed,
        steps=settings.steps,
        width=plan.width,
        height=plan.height,
        init_image=plan.image,
        strength=settings.strength,
        mask=plan.mask,
        model=plan.model or None,
        loras=settings.loras,
        tiling=settings.tiling or None,
        preview="fast",
    )
    return Repainted(layer_bytes(result.image, plan, fmt), result.seed, plan.note)


def _check_loras(models: tether.ModelList, loras: tuple[tether.Lora, ...]) -> None:
    offered = [lora.name for lora in models.loras]
    for lora in loras:
        if lora.name not in offered:
            available = ", ".join(offered) or "none"
            raise UserError(
                f"The Tether server has no LoRA named {lora.name!r} (it has: {available}). "
                "Pick one in the Tether docker."
            )


def _base_model(models: tether.ModelList, name: str) -> tether.BaseModel:
    if not models.models:
        raise UserError("The Tether server hosts no base model.")
    if not name:
        return models.models[0]
    for model in models.models:
        if model.name == name:
            return model
    available = ", ".join(m.name for m in models.models)
    raise UserError(
        f"The Tether server has no model named {name!r} (it has: {available}). "
        "Pick one in the Tether docker."
    )
