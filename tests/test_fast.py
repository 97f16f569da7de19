"""Fast mode (compiled.py) on the CPU: what runs here without a GPU. torch.compile traces
the step with the "eager" backend (dynamo's graph capture, fullgraph: a graph break fails,
as it would under inductor on the GPU) without inductor's compile time. CUDA graphs and the
4/255 tolerance against exact mode are checked on a GPU by tests/bench/gpu.py.

Tracing the tiny model's step takes about a minute on two shared cores: those tests are
slow (`make test-slow`, or `pytest -m slow tests/test_fast.py`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from tether_server import compiled
from tether_server.engine import ControlInput, Engine, Job

SIZE = 64


@pytest.fixture(scope="module")
def engines(tiny_models) -> tuple[Engine, Engine]:
    fast = Engine(tiny_models)
    fast.fast = compiled.Fast(tiny_models.device, "compile", backend="eager")
    return Engine(tiny_models), fast


def job(**fields) -> Job:
    rng = np.random.default_rng(31)
    windowed = [("canny", 1.0, 0.0, 0.5, "balanced"), ("depth", 0.8, 0.0, 1.0, "balanced")]
    units = fields.pop("units", windowed)
    settings = dict(seed=3, steps=4, guidance_scale=7.5, scheduler="euler")
    return Job(
        prompt="a castle on a hill",
        negative_prompt="blurry",
        width=SIZE,
        height=SIZE,
        controls=[
            ControlInput(name, rng.random((SIZE, SIZE, 3), dtype=np.float32), w, s, e, mode)
            for name, w, s, e, mode in units
        ],
        **{**settings, **fields},
    )


@pytest.mark.slow
def test_fast_steps_give_the_exact_image(engines):
    """Under guidance with a unit windowed off halfway: one bucket per set of active units."""
    exact, fast = engines
    expected = exact.run([job()])[0].image
    assert np.abs(fast.run([job()])[0].image - expected).max() < 1e-5
    assert fast.fast.buckets == 2 and fast.fast.compile_s > 0
    captured = fast.fast.compile_s
    fast.run([job(seed=4)])  # same shapes, same buckets: nothing is captured again
    assert fast.fast.compile_s == captured


@pytest.mark.slow
def test_steps_that_condition_only_some_rows_run_eagerly(engines):
    """A unit in `control` mode conditions only the prompt row under guidance."""
    exact, fast = engines
    units = [("depth", 0.8, 0.0, 1.0, "control")]
    before = fast.fast.buckets
    image = fast.run([job(units=units)])[0].image
    assert np.array_equal(image, exact.run([job(units=units)])[0].image)
    assert fast.fast.buckets == before


@pytest.mark.slow
def test_a_model_switch_forgets_the_captures(engines, tiny_models):
    _, fast = engines
    fast.run([job()])
    fast.fast.use(tiny_models)  # the model set it runs on: kept
    assert fast.fast.buckets > 0
    fast.fast.use(dataclasses.replace(tiny_models))
    assert fast.fast.buckets == 0


def test_cuda_graphs_need_cuda():
    with pytest.raises(RuntimeError, match="--fast graphs needs a CUDA device .* --fast compile"):
        compiled.Fast(torch.device("cpu"), "graphs")


def serve(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tether", "serve", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_serve_refuses_cuda_graphs_on_a_cpu_device():
    done = serve("--fast", "graphs", "--devices", "cpu")
    assert done.returncode == 2
    assert "--fast graphs needs CUDA devices (got cpu); --fast compile runs anywhere" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the worker would get a GPU")
def test_a_worker_that_lands_on_the_cpu_with_graphs_fails_to_start_clearly():
    done = serve("--fast")  # graphs, the default of --fast; the device is chosen by the worker
    assert done.returncode == 2
    assert "--fast graphs needs a CUDA device (got cpu)" in done.stderr
