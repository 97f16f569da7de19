"""The gRPC service through the SDK, against real servers on real ports."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tether._proto.tether.v1 import image_pb2, tether_pb2, tether_pb2_grpc

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


BAD_REQUESTS = [
    (dict(width=60), tether.InvalidArgument, "width: must be a positive multiple of 8"),
    (dict(width=2048, height=2048), tether.InvalidArgument, "width: 2048x2048 is 4194304 pixels"),
    (dict(steps=0), tether.InvalidArgument, "steps: must be 1 to 150"),
    (dict(strength=0.5), tether.InvalidArgument, "strength: only applies with init_image"),
    (
        dict(init_image=grey(), strength=1.5),
        tether.InvalidArgument,
        r"strength: must be in \(0, 1\]",
    ),
    (dict(scheduler="k_lms"), tether.InvalidArgument, "scheduler: unknown scheduler 'k_lms'"),
    (dict(model="sdxl"), tether.NotFound, "model: no model 'sdxl'; this server has 'tiny'"),
    (
        dict(controls=[tether.Control("pose", grey())]),
        tether.NotFound,
        r"controls\[0\].model: no control model 'pose'",
    ),
    (
        dict(controls=[tether.Control("canny", grey(), weight=3)]),
        tether.InvalidArgument,
        r"controls\[0\].weight: must be 0 to 2",
    ),
    (
        dict(controls=[tether.Control("canny", grey(), start=0.9, end=0.1)]),
        tether.InvalidArgument,
        r"controls\[0\].start: must not be after end",
    ),
    (
        dict(controls=[tether.Control.canny(grey(), low=250, high=100)]),
        tether.InvalidArgument,
        r"controls\[0\].canny: thresholds must satisfy 0 <= low <= high <= 255",
    ),
    (
        dict(controls=[tether.Control.depth(np.ones((SIZE, SIZE, 3)))]),
        tether.InvalidArgument,
        r"controls\[0\].depth: a depth buffer has 1 channel \(got 3\)",
    ),
    (
        dict(controls=[tether.Control.depth(np.ones((SIZE, SIZE)), near=5.0, far=1.0)]),
        tether.InvalidArgument,
        r"controls\[0\].depth: near: must be > 0 and < far",
    ),
    (
        dict(controls=[tether.Control.normal(np.full((SIZE, SIZE, 3), np.nan))]),
        tether.InvalidArgument,
        r"controls\[0\].normal: contains NaN; write a zero vector",
    ),
    (
        dict(controls=[tether.Control.normal(np.ones((SIZE, SIZE)))]),
        tether.InvalidArgument,
        r"controls\[0\].normal: a normal buffer has 3 or 4 channels \(got 1\)",
    ),
    (
        dict(controls=[tether.Control.normal(np.ones((SIZE, SIZE, 3)), space="world")]),
        tether.InvalidArgument,
        r"controls\[0\].normal.camera_to_world: world-space normals need the camera's 4x4",
    ),
    (
        dict(controls=[tether.Control("depth", grey(), preprocessor=tether.Depth())]),
        tether.InvalidArgument,
        r"controls\[0\].depth: needs a float buffer",
    ),
    (
        dict(init_image=grey(), mask=grey(32)[:, :, 0]),
        tether.InvalidArgument,
        "mask: is 32x32; must be the output size 64x64",
    ),
    (
        dict(mask=grey()),
        tether.InvalidArgument,
        "mask: needs init_image",
    ),
    (
        dict(init_image=grey(), mask=grey(), mask_blur=100),
        tether.InvalidArgument,
        "mask_blur: must be 0 to 64",
    ),
    (
        dict(controls=[tether.Control("canny", b"GIF89a" + bytes(20))]),
        ValueError,
        r"controls\[0\].image: bytes must be a PNG, JPEG or WebP",
    ),
]


@pytest.mark.parametrize("changes, error, message", BAD_REQUESTS)
def test_bad_requests_name_the_field(client, changes, error, message):
    with pytest.raises(error, match=message):
        client.generate("x", **{"steps": 2, "width": SIZE, "height": SIZE, **changes})


def raw_request(**fields) -> tether_pb2.GenerateRequest:
    return tether_pb2.GenerateRequest(prompt="x", width=SIZE, height=SIZE, steps=1, **fields)


def unit(image: image_pb2.Image) -> tether_pb2.ControlUnit:
    return tether_pb2.ControlUnit(model="canny", image=image)


BAD_WIRE = [
    (
        raw_request(controls=[unit(image_pb2.Image())]),
        "INVALID_ARGUMENT",
        r"controls\[0\].image: is empty",
    ),
    (
        raw_request(controls=[unit(image_pb2.Image(encoded=b"BM" + bytes(100)))]),
        "INVALID_ARGUMENT",
        r"controls\[0\].image.encoded: must be a PNG, JPEG or WebP",
    ),
    (
        raw_request(controls=[unit(image_pb2.Image(encoded=b"\x89PNG\r\n\x1a\n" + bytes(30)))]),
        "INVALID_ARGUMENT",
        "cannot be decoded as PNG",
    ),
    (
        raw_request(
            controls=[
                unit(
                    image_pb2.Image(
                        raw=image_pb2.RawImage(
                            width=SIZE,
                            height=SIZE,
                            channels=3,
                            pixel_type=image_pb2.PIXEL_TYPE_F32,
                            data=bytes(10),
                        )
                    )
                )
            ]
        ),
        "INVALID_ARGUMENT",
        r"controls\[0\].image.raw.data: 10 bytes, but 64x64x3 of float32 needs 49152",
    ),
    (
        raw_request(
            controls=[
                unit(
                    image_pb2.Image(
                        raw=image_pb2.RawImage(
                            width=SIZE,
                            height=SIZE,
                            channels=2,
                            pixel_type=image_pb2.PIXEL_TYPE_U8,
                            data=bytes(SIZE * SIZE * 2),
                        )
                    )
                )
            ]
        ),
        "INVALID_ARGUMENT",
        "channels: must be 1, 3 or 4",
    ),
    (
        raw_request(
            controls=[
                unit(
                    image_pb2.Image(
                        raw=image_pb2.RawImage(
                            width=SIZE, height=SIZE, channels=3, data=bytes(SIZE * SIZE * 3)
                        )
                    )
                )
            ]
        ),
        "INVALID_ARGUMENT",
        "pixel_type: must be U8, F16 or F32",
    ),
    (
        raw_request(
            controls=[
                unit(
                    image_pb2.Image(
                        raw=image_pb2.RawImage(
                            width=8192,
                            height=8192,
                            channels=1,
                            pixel_type=image_pb2.PIXEL_TYPE_U8,
                            data=b"",
                        )
                    )
                )
            ]
        ),
        "RESOURCE_EXHAUSTED",
        "8192x8192 is over this server's limit",
    ),
    (
        raw_request(
            controls=[
                tether_pb2.ControlUnit(
                    model="canny",
                    image=image_pb2.Image(
                        raw=image_pb2.RawImage(
                            width=SIZE,
                            height=SIZE,
                            channels=1,
                            pixel_type=image_pb2.PIXEL_TYPE_F32,
                            data=np.full(SIZE * SIZE, np.nan, np.float32).tobytes(),
                        )
                    ),
                )
            ]
        ),
        "INVALID_ARGUMENT",
        "contains NaN",
    ),
    (
        raw_request(output_format=99),
        "INVALID_ARGUMENT",
        "output_format: must be PNG, JPEG, WEBP or RAW",
    ),
]


@pytest.mark.parametrize("request_, code, message", BAD_WIRE)
def test_malformed_messages_are_refused_with_the_field(server, request_, code, message):
    """What a client in another language could send: checked before anything is decoded."""
    with grpc.insecure_channel(server) as channel:
        stub = tether_pb2_grpc.TetherStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(request_))
    assert caught.value.code().name == code
    assert caught.value.details() and __import__("re").search(message, caught.value.details())


def test_decompression_bomb_is_refused_before_decoding(client):
    """A 20000 x 20000 PNG compresses to ~1 MB; it is refused from its header."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(
        tether.ResourceExhausted, match=r"controls\[0\].image: .*over this server's limit"
    ):
        client.generate(
            "x",
            steps=1,
            width=SIZE,
            height=SIZE,
            controls=[tether.Control("canny", buffer.getvalue())],
        )


def test_a_2048_square_rgba_float_buffer_fits_in_a_message(client):
    big = np.zeros((2048, 2048, 4), dtype=np.float32)  # 64 MiB, fitted to the output size
    big[512:1536, 512:1536] = 0.7
    result = client.generate(
        "x", steps=1, width=SIZE, height=SIZE, controls=[tether.Control("depth", big)]
    )
    assert result.image.shape == (SIZE, SIZE, 3)


def test_good_request_after_bad_ones(client):
    for changes, error, _ in BAD_REQUESTS:
        with pytest.raises(error):
            client.generate("x", **{"steps": 2, "width": SIZE, "height": SIZE, **changes})
    assert client.generate("x", steps=2, width=SIZE, height=SIZE).image.shape == (SIZE, SIZE, 3)


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
    with tether.Client(f"127.0.0.1:{__import__('conftest').free_port()}") as nobody:
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


def test_full_queue_is_refused_at_once():
    running = Server("--max-queue", "1", "--max-batch", "1").wait_serving()
    try:
        with tether.Client(running.address) as client:
            busy = client.stream("x", steps=150, width=256, height=256)
            events = iter(busy)
            while not isinstance(next(events), tether.Progress):
                pass  # the busy job runs: the queue is empty again
            waiting = client.stream("x", steps=1, width=SIZE, height=SIZE)
            assert isinstance(next(iter(waiting)), tether.Queued)
            with pytest.raises(tether.ResourceExhausted, match="queue is full"):
                client.generate("x", steps=1, width=SIZE, height=SIZE)
            busy.cancel()
            waiting.cancel()
    finally:
        running.stop()


def test_token_auth(tmp_path):
    running = Server("--token", "s3cret").wait_serving()
    try:
        for token in (None, "wrong"):
            with tether.Client(running.address, token=token) as client:
                with pytest.raises(tether.Unauthenticated, match="authorization: Bearer"):
                    client.models()
                with pytest.raises(tether.Unauthenticated):
                    client.generate("x", steps=1, width=SIZE, height=SIZE)
        with tether.Client(running.address, token="s3cret") as client:
            assert client.generate("x", steps=1, width=SIZE, height=SIZE).image.shape == (
                SIZE,
                SIZE,
                3,
            )
    finally:
        running.stop()


def test_tls(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    running = Server("--tls-cert", str(cert), "--tls-key", str(key), "--host", "127.0.0.1")
    running.address = f"localhost:{running.port}"
    try:
        running.process.poll()
        # Health over TLS needs the certificate too: wait through the SDK instead.
        deadline = time.monotonic() + 60
        with tether.Client(running.address, tls=cert) as client:
            while True:
                try:
                    client.models(timeout=2)
                    break
                except tether.Unavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert client.generate("x", steps=1, width=SIZE, height=SIZE).image.shape == (
                SIZE,
                SIZE,
                3,
            )
        with tether.Client(running.address) as plaintext:
            with pytest.raises(tether.Unavailable):
                plaintext.models(timeout=5)
    finally:
        running.stop()


def self_signed_certificate(folder):
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert_path, key_path


def test_refuses_a_public_address_without_token_or_tls():
    done = subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without --token" in done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_drains_running_jobs():
    running = Server().wait_serving()
    with tether.Client(running.address) as client:
        stream = client.stream("x", steps=30, width=128, height=128)
        events = iter(stream)
        while not isinstance(next(events), tether.Progress):
            pass
        running.process.send_signal(signal.SIGTERM)
        last = list(events)[-1]
    assert isinstance(last, tether.Result)
    assert running.process.wait(timeout=60) == 0
