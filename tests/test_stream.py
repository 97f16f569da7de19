"""Stream batching (stream.py): consecutive live frames denoised in one network call each.
Every call answers once, naming the frame it finished; a finished frame is the image the
engine gives for that frame alone; the lag is steps x strength - 1 calls."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tether
from conftest import Server
from tether_server.engine import ControlInput, Engine, Job
from tether_server.stream import StreamBatch

SIZE = 64


@pytest.fixture(scope="module")
def engine(tiny_models) -> Engine:
    return Engine(tiny_models)


def frame_job(k: int, size: int = SIZE, **fields) -> Job:
    """Frame k of a moving scene: its own colour image and depth map, the session's seed."""
    rng = np.random.default_rng(k)
    settings = dict(scheduler="lcm", steps=4, strength=0.5, guidance_scale=1.0)
    units = fields.pop("units", [("depth", 0.8, 0.0, 1.0)])
    job = Job(
        prompt="a toy town",
        negative_prompt="blurry",
        seed=7,
        width=size,
        height=size,
        init_image=rng.random((size, size, 3), dtype=np.float32),
        controls=[
            ControlInput(name, rng.random((size, size, 3), dtype=np.float32), w, start, end)
            for name, w, start, end in units
        ],
        **{**settings, **fields},
    )
    return job


def through(engine: Engine, stream: StreamBatch, job: Job, frame_id: int, enter: bool = True):
    """One call: (the frame the stream answered, its image)."""
    engine.check(job)
    stream.submit(job, frame_id, arrived=float(frame_id), enter=enter)
    image = engine.run([job])[0].image
    return stream.answered[0], image


def alone(engine: Engine, job: Job) -> np.ndarray:
    return engine.run([dataclasses.replace(job, stream=None)])[0].image


def test_each_call_finishes_the_oldest_frame_as_the_engine_makes_it(engine):
    """4 steps at strength 0.5: 2 steps run, so a frame is finished one call after it
    entered; while the stream fills, the first call answers frame 1's clean prediction."""
    stream = StreamBatch()
    jobs = [frame_job(k) for k in range(1, 6)]
    answers = [through(engine, stream, job, k) for k, job in enumerate(jobs, 1)]
    assert [frame for frame, _ in answers] == [1, 1, 2, 3, 4]
    for frame, image in answers[1:]:
        np.testing.assert_allclose(image, alone(engine, jobs[frame - 1]), atol=1e-5)
    assert np.abs(answers[0][1] - answers[1][1]).max() > 0.02  # filling: not yet finished
    assert stream.in_flight == 1  # frame 5, waiting for the next call


def test_guidance_windows_and_several_units_in_one_batch(engine):
    """Rows at different steps under classifier-free guidance, one unit acting only in the
    first half: a unit outside its window gets scale 0 on that frame's rows."""
    stream = StreamBatch()
    units = [("canny", 1.0, 0.0, 0.5), ("depth", 0.7, 0.0, 1.0)]
    fields = dict(scheduler="euler", strength=1.0, guidance_scale=5.0, units=units)
    jobs = [frame_job(k, **fields) for k in range(1, 7)]
    answers = [through(engine, stream, job, k) for k, job in enumerate(jobs, 1)]
    assert [frame for frame, _ in answers] == [1, 1, 1, 1, 2, 3]
    for frame, image in answers[3:]:
        np.testing.assert_allclose(image, alone(engine, jobs[frame - 1]), atol=1e-5)
    # What equality holds: without the window, frame 2 is another image (far past the
    # tolerance, though the tiny model's canny unit moves it little in the second half).
    unwindowed = frame_job(2, **{**fields, "units": [("canny", 1.0, 0, 1), units[1]]})
    assert np.abs(alone(engine, unwindowed) - answers[4][1]).max() > 1e-3


def test_a_similar_frame_moves_the_stream_on_without_entering(engine):
    stream = StreamBatch()
    through(engine, stream, frame_job(1), 1)
    assert through(engine, stream, frame_job(2), 2)[0] == 1
    frame, image = through(engine, stream, frame_job(3), 3, enter=False)
    assert frame == 2 and stream.in_flight == 0
    np.testing.assert_allclose(image, alone(engine, frame_job(2)), atol=1e-5)


def test_a_frame_of_another_size_restarts_the_stream(engine):
    stream = StreamBatch()
    through(engine, stream, frame_job(1), 1)
    assert through(engine, stream, frame_job(2, size=32), 2)[0] == 2
    assert stream.discarded == 1 and stream.in_flight == 1


def test_schedulers_with_a_history_run_frame_by_frame(engine):
    stream = StreamBatch()
    jobs = [frame_job(k, scheduler="unipc") for k in (1, 2)]
    for k, job in enumerate(jobs, 1):
        frame, image = through(engine, stream, job, k)
        assert frame == k and np.array_equal(image, alone(engine, job))
    assert stream.in_flight == 0


def test_a_live_session_on_a_stream_batching_server_names_its_frames():
    """Paced frames (each sent once the one before is answered): results name frames that
    were sent, and each call after the first finishes the frame sent one call earlier."""
    server = Server("--stream-batch").wait_serving()
    rng = np.random.default_rng(4)
    config = tether.LiveConfig(
        "a toy town", controls=[tether.Control("depth", None, weight=0.8)], seed=3
    )
    results = []
    try:
        with tether.Client(server.address) as client, client.live(config) as session:
            for k in range(1, 7):
                colour = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                depth = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                session.send(tether.LiveFrame(k, colour, controls=[depth]))
                results.append(next(iter(session)))
            # A bad frame is answered with its error; the stream goes on after it.
            session.send(tether.LiveFrame(7, colour, controls=[]))
            error = next(iter(session))
            session.send(tether.LiveFrame(8, colour, controls=[depth]))
            after = next(iter(session))
    finally:
        server.stop()
    assert all(isinstance(r, tether.LiveResult) for r in results)
    assert [r.frame_id for r in results] == [1, 1, 2, 3, 4, 5]
    assert all(r.latency_ms > 0 and not r.reused for r in results)
    assert isinstance(error, tether.LiveError) and error.frame_id == 7
    assert isinstance(after, tether.LiveResult) and after.frame_id == 6
