"""Large canvases with the embedded tiny model, in process (`tether_server.tiles` on a real
Engine): the seams between tiles do not show, a unit's map acts where it says on the
canvas, and the engine's working set is the tile's whatever the canvas's size.

The tiny model draws noise-like detail, so seams are measured statistically: the mean step
between neighbouring pixels across the tiles' edges against the same at other positions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tether_server import tiles
from tether_server.engine import ControlInput, Engine, Job

TILE, OVERLAP = 64, 16


@pytest.fixture(scope="module")
def engine(seeing_models) -> Engine:
    return Engine(seeing_models)


def smooth(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = [0.5 + 0.3 * np.sin(x / 37), 0.5 + 0.3 * np.cos(y / 23), 0.5 + 0.2 * np.sin((x + y) / 51)]
    return np.stack(rgb, axis=2).astype(np.float32)


def canvas(width: int, height: int, overlap: int = OVERLAP, **fields) -> tiles.Canvas:
    settings = {"steps": 4, "strength": 0.5, **fields}  # 2 steps per tile
    job = Job(
        prompt="moss on stone",
        seed=1,
        guidance_scale=1.0,
        width=width,
        height=height,
        init_image=smooth(width, height),
        **settings,
    )
    return tiles.Canvas(job, TILE, overlap)


def seam_ratio(image: np.ndarray, overlap: int, axis: int) -> float:
    """Mean step across the tiles' edges over the mean step at positions that one tile
    covers alone, along `axis` (1: from column to column). Every edge is at a multiple of 8,
    and the autoencoder's 8-pixel blocks make steps there larger, so the positions compared
    are multiples of 8 too."""
    length = image.shape[axis]
    steps = np.abs(np.diff(image, axis=axis)).mean(axis=(1 - axis, 2))  # [i]: i -> i + 1
    coverage = np.zeros(length, dtype=int)
    edges = set()
    for indices, _ in tiles._axis(length, TILE, overlap, wrap=False):
        coverage[indices] += 1
        edges |= {indices[0], indices[-1] + 1} - {0, length}
    alone = [i for i in range(8, length, 8) if coverage[i - 1] == coverage[i] == 1]
    alone = [i for i in alone if i not in edges]
    return steps[[e - 1 for e in sorted(edges)]].mean() / steps[[i - 1 for i in alone]].mean()


def test_seams_between_tiles_do_not_show(engine):
    """Cross-faded tiles step across their edges as the image steps anywhere (ratio ~1);
    the same canvas with hard seams (no overlap) steps clearly more across them, column
    to column (its rows happen to hide hard seams on the tiny model)."""
    soft = tiles.run_canvas(engine, canvas(256, 128), max_batch=4).image
    hard = tiles.run_canvas(engine, canvas(256, 128, overlap=0), max_batch=4).image
    ratios = {axis: seam_ratio(soft, OVERLAP, axis) for axis in (0, 1)}
    assert max(ratios.values()) < 1.15, ratios
    assert seam_ratio(hard, 0, 1) > 1.3


def test_a_units_map_acts_where_it_says_on_the_canvas(engine):
    """Two maps that differ only in a square inside the bottom-right tile: the canvases
    differ there and are bit for bit equal wherever that tile does not reach."""
    plain = np.zeros((128, 256, 3), dtype=np.float32)
    marked = plain.copy()
    marked[96:120, 216:248] = 1
    plan = tiles.plan(256, 128, TILE, OVERLAP, "none")
    reached = np.zeros((128, 256), dtype=bool)
    for tile in plan:
        if tile.crop(marked).any():
            reached[np.ix_(tile.rows, tile.columns)] = True
    assert reached[64:, 192:].all() and reached.sum() == 64 * 64  # one tile only
    images = [
        tiles.run_canvas(
            engine, canvas(256, 128, controls=[ControlInput("canny", m, weight=2)]), 4
        ).image
        for m in (plain, marked)
    ]
    assert np.array_equal(images[0][~reached], images[1][~reached])
    # The tiny model's random ControlNet moves those pixels by about 0.7% of their range.
    assert np.abs(images[0][96:120, 216:248] - images[1][96:120, 216:248]).mean() > 1e-3


def largest_activation(engine: Engine, work: tiles.Canvas | Job) -> int:
    """The most elements of any tensor entering a convolution while `work` runs."""
    largest = [0]

    def record(module, inputs):
        largest[0] = max(largest[0], inputs[0].numel())

    handles = [
        layer.register_forward_pre_hook(record)
        for model in engine.models.modules()
        for layer in model.modules()
        if isinstance(layer, torch.nn.Conv2d)
    ]
    try:
        if isinstance(work, tiles.Canvas):
            tiles.run_canvas(engine, work, max_batch=1)
        else:
            engine.run([work])
    finally:
        for handle in handles:
            handle.remove()
    return largest[0]


def test_the_engine_works_at_the_tile_size_whatever_the_canvas(engine):
    """A canvas four times larger (15 tiles instead of 3) runs each tile through the same
    tensors; one pass at those sizes, which tiles avoid, grows with the canvas."""
    sizes = [(128, 64), (256, 128)]
    small, large = (largest_activation(engine, canvas(*size, steps=2)) for size in sizes)
    assert small == large
    one_pass = [largest_activation(engine, canvas(*size, steps=2).job) for size in sizes]
    assert one_pass[1] == 4 * one_pass[0] and one_pass[0] > small
