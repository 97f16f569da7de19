"""Bad requests through the SDK and straight off the wire: each is refused with the field
named, and the server keeps serving."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from tether._proto.tether.v1 import image_pb2, tether_pb2, tether_pb2_grpc

SIZE = 64


def grey(size: int = SIZE, channels: int = 3) -> np.ndarray:
    return np.full((size, size, channels), 128, dtype=np.uint8)


@pytest.fixture(scope="module")
def client(server):
    with tether.Client(server) as connected:
        yield connected


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
    settings = {"prompt": "x", "width": SIZE, "height": SIZE, "steps": 1}
    return tether_pb2.GenerateRequest(**{**settings, **fields})


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
        "INVALID_ARGUMENT",  # too large for any retry: not RESOURCE_EXHAUSTED, a full queue's
        r"controls\[0\].image: 8192x8192 is over this server's limit",
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
    (
        raw_request(width=8, height=20000, output_format=image_pb2.IMAGE_FORMAT_WEBP),
        "INVALID_ARGUMENT",
        r"output_format: WEBP holds at most 16383 pixels a side \(8x20000 asked\)",
    ),
    (
        raw_request(prompt="p" * 5000),
        "INVALID_ARGUMENT",
        "prompt: at most 4096 characters",
    ),
    (
        raw_request(controls=[tether_pb2.ControlUnit(model="canny", resize=9)]),
        "INVALID_ARGUMENT",
        r"controls\[0\].resize: must be JUST_RESIZE, CROP_AND_RESIZE or RESIZE_AND_FILL",
    ),
    (
        raw_request(scheduler="s" * 100_000),
        "INVALID_ARGUMENT",
        r"scheduler: unknown scheduler 'sss.*'\.\.\. \(100000 characters\); use one of",
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
    assert caught.value.details() and re.search(message, caught.value.details())


def test_a_clients_long_string_is_cut_in_the_message(server):
    """The message travels in trailing metadata, which gRPC limits: echoing a 100 KB name
    whole would end the call with a transport error instead of NOT_FOUND."""
    with grpc.insecure_channel(server) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(tether_pb2_grpc.TetherStub(channel).Generate(raw_request(model="m" * 100_000)))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details().startswith("model: no model 'mmm")
    assert len(caught.value.details()) < 200


def test_decompression_bomb_is_refused_before_decoding(client):
    """A 20000 x 20000 PNG compresses to ~1 MB; it is refused from its header."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(
        tether.InvalidArgument, match=r"controls\[0\].image: .*over this server's limit"
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
            with grpc.insecure_channel(running.address) as channel:
                stub = tether_pb2_grpc.TetherStub(channel)
                # A full queue says when to retry, in trailing metadata ...
                with pytest.raises(grpc.RpcError) as caught:
                    list(stub.Generate(raw_request()))
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                retry = dict(caught.value.trailing_metadata())["retry-after-ms"]
                assert int(retry) > 0
                # ... and a request that can never run is told so even while it is full.
                with pytest.raises(grpc.RpcError) as caught:
                    list(stub.Generate(raw_request(width=4096, height=4096)))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "retry-after-ms" not in dict(caught.value.trailing_metadata())
            busy.cancel()
            waiting.cancel()
    finally:
        running.stop()
