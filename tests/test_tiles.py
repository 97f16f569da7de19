"""Large canvases, the orchestration (`tether_server.tiles`): the tile plan, crops, blending,
masks, progress and cancellation, with a stand-in engine whose output is a known function
of each tile's job, so that every pixel of the canvas can be checked. The real model runs
in tests/test_tiles_engine.py and through a server in tests/test_tiles_service.py."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from tether_server import tiles
from tether_server.engine import ControlInput, Job, Output


class StandIn:
    """Engine.run's contract: one Output per job, None for a cancelled one. Each tile's
    output is `draw(job)`; every batch run is recorded."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.batches: list[list[Job]] = []

    def run(self, jobs: list[Job]) -> list[Output | None]:
        self.batches.append(jobs)
        outputs = []
        for job in jobs:
            if job.on_progress is not None:
                steps = (
                    min(int(job.steps * job.strength), job.steps)
                    if job.init_image is not None
                    else job.steps
                )
                for step in range(1, steps + 1):
                    job.on_progress(step, steps, self.preview(job))
            if job.cancel.is_set():
                outputs.append(None)
                continue
            outputs.append(Output(self.draw(job), job.seed, 1.0, 2.0, 3.0, len(jobs), steps))
        return outputs

    def preview(self, job: Job) -> np.ndarray | None:
        if job.preview == "none":
            return None
        return np.full((job.height // 8, job.width // 8, 3), 0.25, dtype=np.float32)

    def control_model(self, name: str, where: str):
        return SimpleNamespace(kind=name)


def smooth(width: int, height: int, periodic: bool = False) -> np.ndarray:
    """A smooth colour image; `periodic`: it also tiles."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if periodic:
        x, y = x / width * 2 * np.pi, y / height * 2 * np.pi
    else:
        x, y = x / 97, y / 61
    return np.stack([0.5 + 0.3 * np.sin(x), 0.5 + 0.3 * np.cos(y), 0.5 + 0.2 * np.sin(x + y)], 2)


def canvas(width=320, height=192, *, tile=64, overlap=16, **fields) -> tiles.Canvas:
    job = Job(
        prompt="x",
        steps=4,
        guidance_scale=7.5,
        width=width,
        height=height,
        strength=0.5,
        init_image=smooth(width, height).astype(np.float32),
    )
    return tiles.Canvas(dataclasses.replace(job, **fields), tile, overlap)


@pytest.mark.parametrize(
    "length, tile, overlap, wrap",
    [
        (320, 64, 16, False),
        (328, 64, 16, False),
        (320, 64, 0, False),
        (64, 64, 16, False),
        (40, 64, 16, False),
        (320, 64, 16, True),
        (200, 96, 32, True),
        (1000, 512, 128, False),
    ],
)
def test_the_plan_covers_each_axis_with_the_overlap_asked(length, tile, overlap, wrap):
    axis = tiles._axis(length, tile, overlap, wrap)
    covered = np.zeros(length, dtype=int)
    for indices, weights in axis:
        assert indices[0] % 8 == 0 and len(set(indices)) == len(indices) == min(tile, length)
        assert np.all(np.diff(indices) % length == 1)  # contiguous, wrapping at most once
        assert weights.min() > 0 and weights.max() == 1
        covered[indices] += 1
    assert covered.min() >= 1
    starts = [indices[0] for indices, _ in axis]
    if len(axis) > 1:  # the gaps between starts, the wrap's included (the first start is 0)
        gaps = np.diff(starts + ([length] if wrap else []))
        assert gaps.max() <= tile - overlap, "neighbours overlap less than asked"
    if not wrap and length > tile:
        assert starts[0] == 0 and starts[-1] + tile == length  # nothing hangs over the edge


def test_an_axis_one_tile_covers_whole_is_wrapped_inside_the_tile():
    plan = tiles.plan(256, 64, 64, 16, "xy")  # 64 rows: one tile covers them
    assert {tile.tiling for tile in plan} == {"y"}
    assert any(tile.columns[0] > tile.columns[-1] for tile in plan)  # a tile crosses x = 0
    assert {tile.tiling for tile in tiles.plan(256, 64, 64, 16, "none")} == {"none"}
    assert {tile.tiling for tile in tiles.plan(64, 64, 64, 16, "xy")} == {"xy"}


@pytest.mark.parametrize("tiling", ["none", "x", "y", "xy"])
def test_tiles_that_return_their_input_give_back_the_canvas(tiling):
    """Crops and blending are exact inverses: what each tile is given comes back in place."""
    work = canvas(tiling=tiling)
    engine = StandIn(lambda job: job.init_image)
    output = tiles.run_canvas(engine, work, max_batch=4)
    np.testing.assert_allclose(output.image, work.job.init_image, atol=1e-6)
    # 7 x 4 tiles (gaps of at most 48 pixels), in batches of up to 4.
    assert [len(batch) for batch in engine.batches] == [4] * 7
    assert output.batch_size == 4 and output.denoise_ms == 2.0 * 7


def test_each_tile_gets_its_crop_of_every_control_map_and_its_own_seed():
    rng = np.random.default_rng(1)
    maps = [rng.random((192, 320, 3), dtype=np.float32) for _ in range(2)]
    units = [ControlInput("depth", maps[0]), ControlInput("normal", maps[1], weight=0.5)]
    work = canvas(controls=units, seed=2**64 - 2)
    for slot in range(2):
        engine = StandIn(lambda job, slot=slot: job.controls[slot].image)
        output = tiles.run_canvas(engine, work, max_batch=3)
        np.testing.assert_allclose(output.image, maps[slot], atol=1e-6)
    jobs = [job for batch in engine.batches for job in batch]
    assert [job.seed for job in jobs] == [(2**64 - 2 + k) % 2**64 for k in range(28)]
    assert all(job.controls[1].weight == 0.5 and job.width == 64 for job in jobs)


def test_overlaps_cross_fade_where_hard_seams_would_show():
    """Tiles that disagree (each a flat grey of its own): with an overlap the canvas steps
    at most one ramp increment from pixel to pixel; with none it jumps at the borders."""

    def steps(overlap: int) -> float:
        work = canvas(overlap=overlap)
        engine = StandIn(lambda job: np.full((64, 64, 3), job.seed % 7 / 7, np.float32))
        image = tiles.run_canvas(engine, work, max_batch=8).image
        return max(np.abs(np.diff(image, axis=axis)).max() for axis in (0, 1))

    assert steps(16) <= 1 / 16 + 1e-6  # the greys differ by at most 6/7
    assert steps(0) >= 1 / 7


def test_a_mask_runs_only_the_tiles_it_touches_and_keeps_the_rest():
    mask = np.zeros((192, 320), dtype=np.float32)
    mask[150:180, 280:310] = 1  # the bottom-right corner
    work = canvas(mask=mask)
    engine = StandIn(lambda job: np.zeros((64, 64, 3), np.float32))  # "repaints" black
    output = tiles.run_canvas(engine, work, max_batch=4)
    ran = [job for batch in engine.batches for job in batch]
    assert len(ran) == 1 and ran[0].mask.shape == (64, 64) and ran[0].mask.max() == 1
    outside = mask == 0
    assert np.array_equal(output.image[outside], work.job.init_image[outside])
    assert output.image[160, 290].max() == 0


def test_progress_sums_the_steps_of_the_first_pass_and_every_tile():
    work = canvas(preview="fast")
    work.job.init_image = None
    work.first_pass = (160, 96)
    seen = []
    work.on_progress = lambda step, total, preview: seen.append((step, total, preview))
    engine = StandIn(lambda job: smooth(job.width, job.height).astype(np.float32))
    output = tiles.run_canvas(engine, work, max_batch=4)
    first, *tile_batches = engine.batches
    assert (first[0].width, first[0].height, first[0].init_image) == (160, 96, None)
    assert all(job.init_image.shape == (64, 64, 3) for batch in tile_batches for job in batch)
    total = 4 + 28 * 2  # the first pass's 4 steps, then 2 (4 x 0.5) per tile
    assert [(step, t) for step, t, _ in seen] == [(step, total) for step in range(1, total + 1)]
    first_previews = [preview.shape for _, _, preview in seen[:4]]
    assert first_previews == [(12, 20, 3)] * 4  # the first pass's own
    assert all(preview.shape == (24, 40, 3) for _, _, preview in seen[4:])  # canvas / 8
    # The last preview has every tile's (0.25 grey) faded in where the tiles cover alone.
    assert seen[-1][2][4, 4].tolist() == [0.25] * 3
    assert output.image.shape == (192, 320, 3)


def test_a_cancelled_canvas_stops_at_the_tile_it_is_in():
    work = canvas()
    engine = StandIn(lambda job: job.init_image)
    work.on_progress = lambda step, total, preview: step == 5 and work.cancel.set()
    assert tiles.run_canvas(engine, work, max_batch=2) is None
    assert len(engine.batches) == 2  # the batch holding step 5 was the last


@pytest.mark.parametrize("tiling", ["x", "y", "xy"])
def test_upscaling_wraps_the_axes_that_tile(tiling):
    """A periodic image upscaled with wrapping stays periodic: its wrap step is like any
    other step; reflected borders break the period at the edge."""
    small = smooth(40, 24, periodic=True).astype(np.float32)
    wrapped = tiles.upscaled(small, 160, 96, tiling)
    reflected = tiles.upscaled(small, 160, 96, "none")
    assert wrapped.shape == (96, 160, 3) and 0 <= wrapped.min() <= wrapped.max() <= 1
    for axis, name in ((1, "x"), (0, "y")):
        wrap_step = np.abs(np.take(wrapped, 0, axis) - np.take(wrapped, -1, axis)).mean()
        inner = np.abs(np.diff(wrapped, axis=axis)).mean(axis=1 - axis).max()
        if name in tiling:
            assert wrap_step <= inner
            reflected_step = np.abs(np.take(reflected, 0, axis) - np.take(reflected, -1, axis))
            assert reflected_step.mean() > 2 * wrap_step
    np.testing.assert_allclose(tiles.upscaled(small, 160, 96, "none")[1::4, 1::4], small, atol=0.05)
