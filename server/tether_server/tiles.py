"""Large canvases: outputs beyond one pass of the model, refined in overlapping tiles.

The approach is tiled img2img with feathered pixel blending ("SD upscale", as A1111's
script and Krita AI Diffusion's upscaler do), not MultiDiffusion's averaging of every
step's latents over the canvas:
- every tile is an ordinary engine Job at the model's native size, so the loop, control
  units, batching, previews, cancellation and parity with diffusers are the engine's own,
  and the engine never holds more than a batch of tiles: its memory is bounded by the tile
  (the canvas's pixels cost CANVAS_BYTES_PER_PIXEL more, in numpy);
- every tile starts from the canvas's own pixels (the upscaled first pass or the init
  image), so neighbours agree but for the detail each adds, and cross-fading their overlap
  hides the seam (tests/test_tiles_engine.py measures it);
- MultiDiffusion also hides seams at high strength, but needs a loop over a canvas-sized
  latent and a tiled autoencoder, and runs every tile at every step of one loop.

1. Plan: square tiles of `tile` pixels (cut to the canvas where it is smaller) at multiples
   of 8, spread evenly so that neighbours overlap at least `overlap` pixels. On an axis that
   wraps (seamless tiling) the grid wraps too: tiles cross the edge, and an axis that one
   tile covers whole is wrapped inside the tile by circular padding.
2. Upscale: the first pass at its own size (txt2img, the units' maps resized to it), then
   Lanczos to the canvas size (wrapping where the canvas tiles): the canvas's start image.
3. Tiles, in batches of up to `max_batch` through one loop each (they share a batch key):
   crops of the start image, mask and maps, seed + k for tile k. A tile whose mask is
   empty is not run: its pixels are the init image's.
4. Blend: each output is weighted by a ramp rising from 0 to 1 across `overlap` pixels at
   its inner edges; the canvas is the weighted sum over the summed weights, and outside a
   mask the init image's own pixels.

Progress counts steps over the first pass and every tile run, in order: a tile of
img2img runs int(steps x strength) steps, a batch of tiles reports each tile's step.
Previews show the assembled canvas at 1/8 of its size: the start image, with each tile's
preview cross-faded in as it comes (a "full" preview is the tile's decode, scaled down).
Timings sum over the loops; batch_size is the most tiles one loop ran.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from . import resize, seamless
from .engine import Engine, Job, Output

MIN_TILE = 64  # the UNet halves a latent three times: 64 pixels are 1 latent at the bottom
PREVIEW_SCALE = 8  # canvas previews are 1/8 of the canvas, as fast previews are
# Bytes per canvas pixel that making a canvas adds to what a one-pass job keeps (its init
# image and maps at the output size): the weighted sum (12) and summed weights (4), the
# start image's Lanczos copy (12) and the 8-bit result being encoded (3 + its float copy).
CANVAS_BYTES_PER_PIXEL = 44


@dataclass
class Canvas:
    """A generation made in tiles. `job` holds the settings at the canvas size, its init
    image, mask and maps included; with an upscale its init_image is None, and the first
    pass at `first_pass` (width, height) makes the canvas's start image."""

    job: Job
    tile: int
    overlap: int
    first_pass: tuple[int, int] | None = None

    # What the worker reaches for on any job.
    @property
    def cancel(self) -> threading.Event:
        return self.job.cancel

    @property
    def on_progress(self):
        return self.job.on_progress

    @on_progress.setter
    def on_progress(self, callback) -> None:
        self.job.on_progress = callback


@dataclass(frozen=True)
class Tile:
    """Where a tile lies: the canvas rows and columns it covers (wrapped where the canvas
    tiles), its blending weights, and the axes it wraps itself (it covers them whole)."""

    rows: np.ndarray
    columns: np.ndarray
    weights: np.ndarray  # (len(rows), len(columns)) float32
    tiling: str

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[np.ix_(self.rows, self.columns)]


def batch_key(engine: Engine, job: Job | Canvas) -> tuple:
    """A canvas runs alone (its tiles batch among themselves); a job as the engine keys it."""
    if isinstance(job, Canvas):
        return ("canvas", id(job))
    return engine.batch_key(job)


def run(engine: Engine, jobs: list[Job | Canvas], max_batch: int) -> list[Output | None]:
    """The worker's one way to run a batch: a canvas in tiles, jobs through the engine."""
    if isinstance(jobs[0], Canvas):
        return [run_canvas(engine, jobs[0], max_batch)]
    return engine.run(jobs)


def plan(width: int, height: int, tile: int, overlap: int, tiling: str) -> list[Tile]:
    """The tiles of a canvas, row by row (step 1)."""
    wrap_x, wrap_y = seamless.TILINGS[tiling]
    columns = _axis(width, tile, overlap, wrap_x)
    rows = _axis(height, tile, overlap, wrap_y)
    wraps_inside = (wrap_x and len(columns) == 1, wrap_y and len(rows) == 1)
    inside = next(name for name, axes in seamless.TILINGS.items() if axes == wraps_inside)
    return [
        Tile(ys, xs, np.outer(ramp_y, ramp_x).astype(np.float32), inside)
        for ys, ramp_y in rows
        for xs, ramp_x in columns
    ]


def _axis(length: int, tile: int, overlap: int, wrap: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices, weights) of each tile along one axis. Starts are multiples of 8, spread
    evenly: every gap between starts is at most tile - overlap, so neighbours overlap at
    least `overlap` pixels."""
    if tile >= length:
        return [(np.arange(length), np.ones(length))]
    blocks, stride = length // 8, (tile - overlap) // 8
    if wrap:
        count = -(-blocks // stride)
        starts = [8 * (k * blocks // count) for k in range(count)]
    else:
        span = blocks - tile // 8
        count = -(-span // stride) + 1
        starts = [8 * (k * span // (count - 1)) for k in range(count)]
    ramp = (np.arange(overlap) + 0.5) / overlap
    axis = []
    for start in starts:
        weights = np.ones(tile)
        if overlap and (wrap or start > 0):
            weights[:overlap] = ramp
        if overlap and (wrap or start + tile < length):
            weights[tile - overlap :] = np.minimum(weights[tile - overlap :], ramp[::-1])
        axis.append(((start + np.arange(tile)) % length, weights))
    return axis


def upscaled(image: np.ndarray, width: int, height: int, tiling: str) -> np.ndarray:
    """Lanczos (OpenCV's 8-tap) to width x height, pixel centres aligned; an axis that tiles
    takes its border pixels from the opposite edge, another reflects them (step 2)."""
    margin = 4  # the Lanczos kernel's reach in source pixels
    wrap_x, wrap_y = seamless.TILINGS[tiling]
    padded = np.pad(image, ((0, 0), (margin, margin), (0, 0)), "wrap" if wrap_x else "reflect")
    padded = np.pad(padded, ((margin, margin), (0, 0), (0, 0)), "wrap" if wrap_y else "reflect")
    fx, fy = width / image.shape[1], height / image.shape[0]
    matrix = np.array(
        [[fx, 0, (fx - 1) / 2 - fx * margin], [0, fy, (fy - 1) / 2 - fy * margin]], np.float64
    )
    scaled = cv2.warpAffine(padded, matrix, (width, height), flags=cv2.INTER_LANCZOS4)
    return np.clip(scaled, 0, 1, out=scaled)


def run_canvas(engine: Engine, canvas: Canvas, max_batch: int) -> Output | None:
    """Make the canvas (steps 1-4 above); None if it was cancelled."""
    job = canvas.job
    tiles = plan(job.width, job.height, canvas.tile, canvas.overlap, job.tiling)
    # Tiles that repaint nothing are not run: the mask is known, the start image may not be.
    todo = [
        (k, tile) for k, tile in enumerate(tiles) if job.mask is None or tile.crop(job.mask).any()
    ]
    tile_steps = min(int(job.steps * job.strength), job.steps)
    first_steps = job.steps if canvas.first_pass else 0
    progress = _Progress(job, first_steps + tile_steps * len(todo))
    timer = _Timer()

    # 2. The start image.
    start = job.init_image
    if canvas.first_pass is not None:
        first = _first_pass(engine, job, *canvas.first_pass, progress)
        outputs = engine.run([first])
        if not timer.count(outputs):
            return None
        start = upscaled(outputs[0].image, job.width, job.height, job.tiling)
    progress.begin_tiles(start)

    # 3. The tiles, and 4. their blend.
    total = np.zeros_like(start)
    weights = np.zeros(start.shape[:2], dtype=np.float32)
    kept = set(range(len(tiles))) - {k for k, _ in todo}
    for k in sorted(kept):
        _add(total, weights, tiles[k], tiles[k].crop(start))
    for offset in range(0, len(todo), max_batch):
        batch = todo[offset : offset + max_batch]
        outputs = engine.run([_tile_job(job, k, tile, start, progress) for k, tile in batch])
        if not timer.count(outputs):
            return None
        for (_, tile), output in zip(batch, outputs):
            _add(total, weights, tile, output.image)
    blending = time.perf_counter()
    total /= weights[:, :, None]
    if job.mask is not None:
        np.copyto(total, start, where=(job.mask == 0)[:, :, None])
    timer.decode_ms += (time.perf_counter() - blending) * 1000
    return Output(
        image=total,
        seed=job.seed,
        prepare_ms=timer.prepare_ms,
        denoise_ms=timer.denoise_ms,
        decode_ms=timer.decode_ms,
        batch_size=timer.batch_size,
        steps=timer.steps,
    )


def _first_pass(engine: Engine, job: Job, width: int, height: int, progress) -> Job:
    """The upscale's first pass: txt2img at its own size, the units' maps resized to it."""
    controls = []
    for i, unit in enumerate(job.controls):
        kind = engine.control_model(unit.model, f"controls[{i}]").kind
        controls.append(
            dataclasses.replace(unit, image=resize.fit(unit.image, width, height, "resize", kind))
        )
    return dataclasses.replace(
        job, width=width, height=height, controls=controls, on_progress=progress.first_pass
    )


def _tile_job(job: Job, k: int, tile: Tile, start: np.ndarray, progress) -> Job:
    return dataclasses.replace(
        job,
        width=len(tile.columns),
        height=len(tile.rows),
        seed=(job.seed + k) % 2**64,
        init_image=tile.crop(start),
        mask=None if job.mask is None else tile.crop(job.mask),
        controls=[dataclasses.replace(unit, image=tile.crop(unit.image)) for unit in job.controls],
        tiling=tile.tiling,
        on_progress=progress.tile(tile),
    )


def _add(total: np.ndarray, weights: np.ndarray, tile: Tile, image: np.ndarray) -> None:
    where = np.ix_(tile.rows, tile.columns)
    total[where] += image * tile.weights[:, :, None]
    weights[where] += tile.weights


class _Timer:
    """Timings summed over the loops a canvas runs."""

    def __init__(self) -> None:
        self.prepare_ms = self.denoise_ms = self.decode_ms = 0.0
        self.batch_size = 1
        self.steps = 0  # denoising steps of every loop, for the mean step time

    def count(self, outputs: list[Output | None]) -> bool:
        """Add one loop's timings (every job of a batch reports the same); False if the
        canvas was cancelled."""
        if any(output is None for output in outputs):
            return False
        self.prepare_ms += outputs[0].prepare_ms
        self.denoise_ms += outputs[0].denoise_ms
        self.decode_ms += outputs[0].decode_ms
        self.steps += outputs[0].steps
        self.batch_size = max(self.batch_size, len(outputs))
        return True


class _Progress:
    """The canvas's progress: steps summed over its passes, previews of the whole canvas."""

    def __init__(self, job: Job, total: int) -> None:
        self.job = job
        self.total = total
        self.done = 0
        self.preview: np.ndarray | None = None

    def first_pass(self, step: int, total: int, preview: np.ndarray | None) -> None:
        self._report(preview)

    def begin_tiles(self, start: np.ndarray) -> None:
        if self.job.preview != "none":
            height, width = start.shape[0] // PREVIEW_SCALE, start.shape[1] // PREVIEW_SCALE
            self.preview = cv2.resize(start, (width, height), interpolation=cv2.INTER_AREA)

    def tile(self, tile: Tile):
        def on_progress(step: int, total: int, preview: np.ndarray | None) -> None:
            if preview is not None:
                self._paste(tile, preview)
            self._report(None if preview is None else self.preview.copy())

        return on_progress

    def _paste(self, tile: Tile, preview: np.ndarray) -> None:
        rows, columns = tile.rows[::PREVIEW_SCALE], tile.columns[::PREVIEW_SCALE]
        small = (len(columns), len(rows))
        if preview.shape[1::-1] != small:  # a full preview: the tile's decode
            preview = cv2.resize(preview, small, interpolation=cv2.INTER_AREA)
        weights = tile.weights[::PREVIEW_SCALE, ::PREVIEW_SCALE, None]
        where = np.ix_(rows // PREVIEW_SCALE, columns // PREVIEW_SCALE)
        self.preview[where] = self.preview[where] * (1 - weights) + preview * weights

    def _report(self, preview: np.ndarray | None) -> None:
        self.done += 1
        if self.job.on_progress is not None:
            self.job.on_progress(self.done, self.total, preview)
