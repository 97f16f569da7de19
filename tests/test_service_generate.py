"""Generate and the other unary calls through the SDK, against real servers on real ports."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest
import tether
from conftest import Server, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SIZE = 64


def grey(size: int = SIZE, channels: int = 3) -> np.ndarray:
    return np.full((size, size, channels), 128, dtype=np.uint8)


@pytest.fixture(scope="module")
def client(server):
    with tether.Client(server) as connected:
        yield connected


def test_generate_returns_the_image_seed_and_timings(client):
    depth = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)

    def generate() -> tether.Result:
        return client.generate(
            "a stone bridge",
            controls=[
                tether.Control("depth", depth, weight=0.8, end=0.6),
                tether.Control("canny", grey()),
            ],
            steps=4,
            seed=11,
            width=SIZE,
            height=SIZE,
        )

    result = generate()
    assert result.image.shape == (SIZE, SIZE, 3) and result.image.dtype == np.uint8
    assert result.seed == 11
    assert result.timings.denoise_ms > 0 and result.timings.total_ms >= result.timings.denoise_ms
    again = generate()
    assert np.array_equal(result.image, again.image)


def test_random_seed_is_reported_and_reproduces(client):
    first = client.generate("fog", steps=2, width=SIZE, height=SIZE)
    second = client.generate("fog", steps=2, width=SIZE, height=SIZE, seed=first.seed)
    assert np.array_equal(first.image, second.image)


def test_defaults_come_from_the_model(client):
    listing = client.models()
    result = client.generate("a hill", steps=1)
    model = listing.models[0]
    assert result.image.shape == (model.default_height, model.default_width, 3)


def test_stream_events_in_order_with_previews(client):
    events = list(
        client.stream("a tower", steps=5, width=SIZE, height=SIZE, preview="fast", preview_every=2)
    )
    assert isinstance(events[0], tether.Queued)
    progress = [e for e in events if isinstance(e, tether.Progress)]
    assert [p.step for p in progress] == [1, 2, 3, 4, 5]
    assert [p.preview is not None for p in progress] == [False, True, False, True, True]
    assert progress[1].preview.shape == (SIZE // 8, SIZE // 8, 3)
    assert isinstance(events[-1], tether.Result)


@pytest.mark.parametrize(
    "fmt, magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("webp", b"RIFF")]
)
def test_encoded_output_formats(client, tmp_path, fmt, magic):
    result = client.generate("x", steps=1, width=SIZE, height=SIZE, output_format=fmt)
    assert result.data.startswith(magic)
    assert result.image.shape == (SIZE, SIZE, 3)
    path = result.save(tmp_path / f"out.{'jpg' if fmt == 'jpeg' else fmt}")
    assert path.read_bytes() == result.data


def test_image_inputs_png_bytes_path_float_and_grey(client, tmp_path):
    from PIL import Image

    Image.fromarray(grey()).save(tmp_path / "c.png")
    png = (tmp_path / "c.png").read_bytes()
    for image in (
        png,
        tmp_path / "c.png",
        grey()[:, :, 0],
        grey().astype(np.float16) / 255,
        Image.open(tmp_path / "c.png"),
        grey(channels=4),
    ):
        result = client.generate(
            "x", steps=1, width=SIZE, height=SIZE, controls=[tether.Control("canny", image)]
        )
        assert result.image.shape == (SIZE, SIZE, 3)


def test_img2img(client):
    init = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    events = list(
        client.stream("x", steps=10, strength=0.5, init_image=init, width=SIZE, height=SIZE)
    )
    assert [e.total for e in events if isinstance(e, tether.Progress)][-1] == 5


def test_cancel_stops_the_job_and_the_server_keeps_serving(client):
    stream = client.stream("x", steps=150, width=256, height=256)
    steps = []
    with pytest.raises(tether.Cancelled):
        for event in stream:
            if isinstance(event, tether.Progress):
                steps.append(event.step)
                if event.step == 2:
                    stream.cancel()
    assert steps[-1] < 10
    started = time.perf_counter()
    client.generate("x", steps=1, width=SIZE, height=SIZE)
    # The cancelled job no longer holds the engine (150 steps would take far longer).
    assert time.perf_counter() - started < 30


def test_models_and_server_info(client):
    listing = client.models()
    assert [m.name for m in listing.models] == ["tiny"]
    assert {(c.name, c.kind) for c in listing.controls} == {
        ("canny", "canny"),
        ("depth", "depth"),
        ("normal", "normal"),
    }
    assert listing.schedulers[0] == "unipc" and "euler_a" in listing.schedulers
    info = client.server_info()
    assert info.version == tether.__version__ and info.device == "cpu" and info.dtype == "float32"
    assert info.limits == listing.limits and info.limits.max_pixels == 1024 * 1024


def test_health_and_reflection(server):
    with grpc.insecure_channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="tether.v1.Tether"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for s in next(answers).list_services_response.service}
    assert {"tether.v1.Tether", "grpc.health.v1.Health"} <= names


def test_unreachable_server_is_unavailable():
    with tether.Client(f"127.0.0.1:{free_port()}") as nobody:
        with pytest.raises(tether.Unavailable):
            nobody.models(timeout=5)


def test_async_client_generates_and_streams(server):
    async def main():
        async with tether.aio.Client(server) as client:
            seen = []
            result = await client.generate(
                "x", steps=3, width=SIZE, height=SIZE, seed=4, on_progress=seen.append
            )
            events = [e async for e in client.stream("x", steps=3, width=SIZE, height=SIZE, seed=4)]
            with pytest.raises(tether.InvalidArgument, match="steps"):
                await client.generate("x", steps=0)
            return result, seen, events, await client.models()

    result, seen, events, listing = asyncio.run(main())
    assert [p.step for p in seen] == [1, 2, 3]
    assert np.array_equal(events[-1].image, result.image)
    assert listing.models[0].name == "tiny"


def test_concurrent_compatible_jobs_are_batched():
    """While one job runs, compatible jobs that arrive wait and then share one loop."""
    running = Server("--max-batch", "4").wait_serving()
    try:
        with tether.Client(running.address) as client:
            blocker = client.stream("x", steps=40, width=128, height=128)
            first = next(iter(blocker))  # the blocker is queued or running
            assert isinstance(first, tether.Queued)
            results = [None] * 3

            def one(k):
                results[k] = client.generate(
                    f"prompt {k}", steps=3, width=SIZE, height=SIZE, seed=k
                )

            threads = [threading.Thread(target=one, args=(k,)) for k in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            blocker.cancel()
        assert [r.timings.batch_size for r in results] == [3, 3, 3]
        alone = tether.Client(running.address).generate(
            "prompt 1", steps=3, width=SIZE, height=SIZE, seed=1
        )
        np.testing.assert_allclose(alone.image, results[1].image, atol=1)
    finally:
        running.stop()
