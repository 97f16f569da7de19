"""Engine behaviour beyond parity: windows, previews, cancellation, validation."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pytest
from tether_server.engine import ControlInput, Engine, Job
from tether_server.errors import InvalidArgument, NotFound

SIZE = 64


@pytest.fixture(scope="module")
def engine(tiny_models) -> Engine:
    return Engine(tiny_models, max_pixels=512 * 512, max_steps=50)


def blank(size: int = SIZE) -> np.ndarray:
    return np.full((size, size, 3), 0.5, dtype=np.float32)


def job(**changes) -> Job:
    base = Job(prompt="a red barn", seed=5, steps=6, guidance_scale=7.5, width=SIZE, height=SIZE)
    return dataclasses.replace(base, **changes)


def count_calls(module) -> list[int]:
    calls = []
    handle = module.conv_in.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_unit_outside_its_window_is_not_run(engine):
    """diffusers runs every unit every step (weight 0 outside the window); the engine
    skips it: 6 steps with window [0, 0.5] run the ControlNet 3 times."""
    net = engine.models.controls["depth"].model
    calls, handle = count_calls(net)
    try:
        engine.run([job(controls=[ControlInput("depth", blank(), start=0.0, end=0.5)])])
    finally:
        handle.remove()
    assert len(calls) == 3


def test_fast_and_full_previews(engine):
    seen = []
    fast = job(preview="fast", preview_every=4, on_progress=lambda *a: seen.append(a))
    engine.run([fast])
    assert [(step, total) for step, total, _ in seen] == [(s, 6) for s in range(1, 7)]
    shapes = {step: None if p is None else p.shape for step, _, p in seen}
    # every 4th step and always the last
    assert shapes == {1: None, 2: None, 3: None, 4: (8, 8, 3), 5: None, 6: (8, 8, 3)}
    seen.clear()
    engine.run([job(preview="full", on_progress=lambda *a: seen.append(a))])
    previews = [p for _, _, p in seen]
    assert all(p.shape == (SIZE, SIZE, 3) and 0 <= p.min() <= p.max() <= 1 for p in previews)


def test_full_preview_at_last_step_is_the_result(engine):
    """The predicted clean latent at the last step is what the loop returns (for a
    scheduler that ends at sigma 0), so its decode is the final image."""
    seen = []
    output = engine.run(
        [job(scheduler="euler", preview="full", on_progress=lambda *a: seen.append(a))]
    )
    np.testing.assert_allclose(seen[-1][2], output[0].image, atol=1e-5)


def test_cancel_stops_before_the_next_step_and_frees_the_job(engine):
    steps_seen = []
    cancelled = job(steps=20, controls=[ControlInput("canny", blank())])

    stop = cancelled.cancel

    def on_progress(step, total, preview):
        steps_seen.append(step)
        if step == 2:
            stop.set()

    cancelled.on_progress = on_progress
    other = job(steps=20, seed=9, controls=[ControlInput("canny", blank())])
    outputs = engine.run([cancelled, other])
    assert outputs[0] is None and outputs[1] is not None
    assert steps_seen == [1, 2]
    # The survivor's image is the one it gets alone: cancelled rows leave the batch.
    alone = engine.run([dataclasses.replace(other, cancel=type(other.cancel)())])[0]
    np.testing.assert_allclose(outputs[1].image, alone.image, atol=1e-4)
    # Nothing of the cancelled job stays referenced by the engine.
    ref = weakref.ref(cancelled.controls[0].image)
    del cancelled, on_progress
    gc.collect()
    assert ref() is None


def test_cancelled_alone_returns_none(engine):
    lone = job(steps=10)
    lone.cancel.set()
    assert engine.run([lone]) == [None]


def test_without_guidance(engine):
    output = engine.run([job(guidance_scale=1.0, controls=[ControlInput("normal", blank())])])[0]
    assert output.image.shape == (SIZE, SIZE, 3)


def test_prompt_changes_the_image_and_seed_repeats_it(engine):
    a = engine.run([job()])[0].image
    b = engine.run([job()])[0].image
    c = engine.run([job(prompt="a blue lake")])[0].image
    d = engine.run([job(seed=6)])[0].image
    assert np.array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


BAD = {
    "width": (dict(width=65), "width: must be a positive multiple of 8"),
    "height": (dict(height=0), "height: must be a positive multiple of 8"),
    "pixels": (dict(width=1024, height=1024), "accepts at most 262144"),
    "steps": (dict(steps=0), "steps: must be 1 to 50"),
    "steps high": (dict(steps=51), "steps: must be 1 to 50"),
    "guidance": (dict(guidance_scale=-1), "guidance_scale: must be 0 to 30"),
    "scheduler": (dict(scheduler="plms"), "scheduler: unknown scheduler 'plms'; use one of unipc"),
    "strength": (dict(init_image=blank(), strength=0), r"strength: must be in \(0, 1\]"),
    "strength steps": (dict(init_image=blank(), strength=0.1), "leaves no step to run"),
    "init size": (dict(init_image=blank(32)), "init_image: is 32x32 with 3 channel"),
    "weight": (
        dict(controls=[ControlInput("canny", blank(), weight=2.5)]),
        r"controls\[0\].weight: must be 0 to 2",
    ),
    "start > end": (
        dict(controls=[ControlInput("canny", blank(), start=0.8, end=0.2)]),
        r"controls\[0\].start: must not be after end",
    ),
    "end": (
        dict(controls=[ControlInput("canny", blank(), end=1.5)]),
        r"controls\[0\].end: must be 0 to 1",
    ),
    "mode": (
        dict(controls=[ControlInput("canny", blank(), mode="loud")]),
        r"controls\[0\].mode: must be one of",
    ),
    "control size": (
        dict(controls=[ControlInput("canny", blank(), 1.0), ControlInput("depth", blank(48))]),
        r"controls\[1\].image: is 48x48 with 3 channel\(s\); must be the output size 64x64",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_names_the_field(engine, case):
    changes, message = BAD[case]
    with pytest.raises(InvalidArgument, match=message):
        engine.check(job(**changes))


def test_unknown_control_model_is_not_found(engine):
    with pytest.raises(
        NotFound,
        match=r"controls\[0\].model: no control model 'pose'; this server has canny, depth, normal",
    ):
        engine.check(job(controls=[ControlInput("pose", blank())]))


def test_good_job_runs_after_bad_ones(engine):
    for changes, _ in BAD.values():
        with pytest.raises(InvalidArgument):
            engine.check(job(**changes))
    good = job(controls=[ControlInput("canny", blank())])
    engine.check(good)
    assert engine.run([good])[0].image.shape == (SIZE, SIZE, 3)
