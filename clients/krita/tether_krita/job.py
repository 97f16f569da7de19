"""One repaint, from a snapshot of the canvas to the bytes of the result layer.

Runs on a worker thread and never touches Krita: the GUI thread takes a `Snapshot`
(raw bytes read from the document), the job does every conversion and every server call,
and hands back `JobEvent`s whose pixels are ready for `Node.setPixelData`. That keeps
Krita's API on the thread it belongs to and the UI responsive.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tether

from . import masks, pixels
from .geometry import Rect, generation_size
from .messages import UserError, describe
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
    """The request-side data of a repaint, at generation size."""

    width: int
    height: int
    image: np.ndarray  # (height, width, 3) uint8 sRGB: the init image
    mask: np.ndarray  # (height, width) uint8, 255 = repaint
    coverage: np.ndarray  # (region h, region w) float32 selection coverage, for the layer
    model: str  # base model name, "" for the server's default
    canny_model: str  # the server's control model of kind "canny"


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
class Finished:
    pixels: bytes  # the result layer over the region, transparent outside the selection
    seed: int


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class Stopped:
    """The user cancelled; the server stopped the job."""


JobEvent = StatusChanged | EdgesReady | PreviewReady | Finished | Failed | Stopped


def prepare(snapshot: Snapshot, settings: Settings, models: tether.ModelList) -> Prepared:
    """Choose the generation size and model, and scale image and mask to it. Raises
    UserError when the server lacks what the repaint needs."""
    base = _base_model(models, settings.model)
    canny = next((c.name for c in models.controls if c.kind == "canny"), None)
    if canny is None:
        raise UserError("The Tether server offers no canny control model, which Repaint needs.")
    region = snapshot.region
    width, height = generation_size(
        region.width,
        region.height,
        base.default_width,
        base.default_height,
        models.limits.max_pixels,
    )
    rgba = pixels.decode(snapshot.pixels, region.width, region.height, snapshot.fmt)
    image = masks.to_uint8(resize(pixels.flatten(rgba), width, height))
    if snapshot.selection is None:
        coverage = masks.full_mask(region.width, region.height)
    else:
        coverage = masks.selection_mask(snapshot.selection, region.width, region.height)
    mask = masks.to_uint8(resize(coverage, width, height))
    return Prepared(width, height, image, mask, coverage, settings.model, canny)


class RepaintJob:
    """Runs one repaint on the calling (worker) thread and reports through `emit`.

    `run` never raises: every outcome ends in exactly one Finished, Failed or Stopped.
    `cancel` may be called from any thread, at any time.
    """

    def __init__(
        self,
        client: Any,
        snapshot: Snapshot,
        settings: Settings,
        emit: Callable[[JobEvent], None],
    ) -> None:
        self._client = client
        self._snapshot = snapshot
        self._settings = settings
        self._emit = emit
        self._lock = threading.Lock()
        self._cancelled = False
        self._stream: Any = None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            stream = self._stream
        if stream is not None:
            stream.cancel()

    def run(self) -> None:
        try:
            outcome = self._run()
        except tether.Cancelled:
            outcome = Stopped()
        except Exception as error:  # noqa: BLE001 - every failure must reach the user
            outcome = Failed(describe(error, self._settings.address))
            if not isinstance(error, (UserError, tether.TetherError)):
                # A bug, not a condition: keep the traceback for Krita's log.
                traceback.print_exc()
        finally:
            self._client.close()
        self._emit(outcome)

    def _run(self) -> JobEvent:
        settings, region = self._settings, self._snapshot.region
        self._emit(StatusChanged("Asking the server for its models…"))
        models = self._client.models(timeout=MODELS_TIMEOUT_S)
        plan = prepare(self._snapshot, settings, models)
        if self._is_cancelled():
            return Stopped()

        # The server finds the edges (OpenCV canny) in the init image itself; they are
        # only fetched to show them, through Preprocess, which gives the very map
        # Generate uses for the same unit.
        edges = tether.Control.canny(
            plan.image,
            low=settings.edge_low,
            high=settings.edge_high,
            model=plan.canny_model,
            weight=settings.edge_weight,
        )
        if settings.show_edges:
            self._emit(StatusChanged("Finding edges…"))
            edge_map = self._client.preprocess(
                edges, width=plan.width, height=plan.height, timeout=PREPROCESS_TIMEOUT_S
            )
            layer = masks.edges_pixels(edge_map, region.width, region.height)
            self._emit(EdgesReady(pixels.encode(layer, self._snapshot.fmt)))
            if self._is_cancelled():
                return Stopped()

        self._emit(StatusChanged("Sending the request…"))
        stream = self._client.stream(
            settings.prompt,
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
            preview="fast",
        )
        with self._lock:
            self._stream = stream
            cancelled = self._cancelled
        if cancelled:
            stream.cancel()
        for event in stream:
            if isinstance(event, tether.Queued):
                self._emit(StatusChanged(f"Queued: {event.position} job(s) ahead"))
            elif isinstance(event, tether.Progress):
                self._emit(self._preview(event, plan))
            elif isinstance(event, tether.Result):
                layer = masks.layer_pixels(event.image.astype(np.float32) / 255, plan.coverage)
                return Finished(pixels.encode(layer, self._snapshot.fmt), event.seed)
        raise tether.Internal("the server ended the stream without a result")

    def _preview(self, event: tether.Progress, plan: Prepared) -> PreviewReady:
        if event.preview is None:
            return PreviewReady(event.step, event.total, None)
        layer = masks.layer_pixels(event.preview.astype(np.float32) / 255, plan.coverage)
        return PreviewReady(event.step, event.total, pixels.encode(layer, self._snapshot.fmt))

    def _is_cancelled(self) -> bool:
        with self._lock:
            return self._cancelled


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
