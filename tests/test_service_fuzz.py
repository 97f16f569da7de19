"""The wire contract under mutated requests (hypothesis), against a real server on a real port.

A client that knows only the .proto files may send anything: huge, zero and odd sizes, many
units, unknown enum values, garbage or truncated image bytes, raw buffers whose length does
not match their header, impossible preprocessor settings, non-finite floats. Every call must
end OK or with INVALID_ARGUMENT / NOT_FOUND naming the field, RESOURCE_EXHAUSTED only for a
full queue (with its retry hint), or CANCELLED; never UNKNOWN or INTERNAL. Afterwards a good
request still succeeds.

The budget is fixed so that the test runs in the default suite: a derandomized run of
FUZZ_EXAMPLES Generate and PREPROCESS_EXAMPLES Preprocess requests, on a server whose limits
(128 x 128 pixels, 4 steps) keep every request that passes validation quick to run.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tether._proto.tether.v1 import image_pb2, tether_pb2, tether_pb2_grpc

FUZZ_EXAMPLES = 60
PREPROCESS_EXAMPLES = 25
BUDGET = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
# "controls[2].image.raw.data: ..." — an error names its field first.
NAMES_A_FIELD = re.compile(r"^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: ")

SIZES = [0, 1, 7, 8, 16, 60, 64, 96, 128, 136, 4096, 12000, 16000, 2**31 - 1, 2**32 - 1]
FLOATS = [0.0, 0.3, 0.5, 1.0, 1.5, 2.5, 7.5, 31.0, -1.0, math.nan, math.inf, -math.inf]


@pytest.fixture(scope="module")
def stub():
    running = Server("--max-pixels", str(128 * 128), "--max-steps", "4").wait_serving()
    with grpc.insecure_channel(running.address) as channel:
        yield tether_pb2_grpc.TetherStub(channel)
    running.stop()


# -- images --------------------------------------------------------------------------------


def png(width: int, height: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR chunk claiming any size, and no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a"]


@st.composite
def raw_images(draw) -> image_pb2.Image:
    width = draw(st.sampled_from([0, 1, 8, 64, 100, 4096, 2**32 - 1]))
    height = draw(st.sampled_from([0, 1, 8, 64, 100, 4096, 2**32 - 1]))
    channels = draw(st.integers(0, 5))
    pixel_type = draw(st.integers(0, 4))
    itemsize = {1: 1, 2: 2, 3: 4}.get(pixel_type, 1)
    needed = width * height * channels * itemsize
    length = needed + draw(st.sampled_from([0, 0, 0, -1, 1, -7]))
    if not 0 <= length <= 200_000:
        length = draw(st.integers(0, 64))
    value = draw(st.sampled_from([0.0, 0.5, 1.0, -1.0, 3.0, math.nan, math.inf]))
    if pixel_type == image_pb2.PIXEL_TYPE_F32:
        data = np.full(length // 4 + 1, value, "<f4").tobytes()[:length]
    elif pixel_type == image_pb2.PIXEL_TYPE_F16:
        data = np.full(length // 2 + 1, value, "<f2").tobytes()[:length]
    else:
        data = bytes([draw(st.integers(0, 255))]) * length
    raw = image_pb2.RawImage(
        width=width, height=height, channels=channels, pixel_type=pixel_type, data=data
    )
    return image_pb2.Image(raw=raw)


def images() -> st.SearchStrategy[image_pb2.Image | None]:
    small = st.integers(1, 96)
    encoded = st.one_of(
        st.builds(png, small, small, st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "1"])),
        st.builds(png_header, st.sampled_from(SIZES), st.sampled_from(SIZES)),
        st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=48)),
        st.builds(
            lambda data, cut: data[:cut],
            st.builds(png, small, small, st.just("RGB")),
            st.integers(8, 60),
        ),
    )
    return st.one_of(
        st.none(),
        st.just(image_pb2.Image()),
        encoded.map(lambda data: image_pb2.Image(encoded=data)),
        raw_images(),
    )


# -- good requests and mutations -------------------------------------------------------------

GOOD_SIDES = [8, 16, 64, 96, 128]  # any two make a size this server accepts


@st.composite
def good_units(draw) -> tether_pb2.ControlUnit:
    """A unit the server accepts: an image that suits its preprocessor, settings in range."""
    shape = (draw(st.integers(1, 96)), draw(st.integers(1, 96)))
    unit = tether_pb2.ControlUnit(
        model=draw(st.sampled_from(["canny", "depth", "normal"])),
        weight=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        mode=draw(st.integers(0, 3)),
        resize=draw(st.integers(0, 3)),
    )
    unit.start, unit.end = sorted(
        draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=2, max_size=2))
    )
    preprocessor = draw(st.sampled_from([None, "canny", "invert", "depth", "normal"]))
    if preprocessor == "depth":
        depth = np.linspace(1, 10, shape[0] * shape[1], dtype=np.float32).reshape(shape)
        unit.image.CopyFrom(tether.images.to_proto(depth))
        unit.depth.far = draw(st.sampled_from([0.0, 5.0]))
    elif preprocessor == "normal":
        normals = np.zeros((*shape, 3), dtype=np.float32)
        normals[..., 2] = 1
        unit.image.CopyFrom(tether.images.to_proto(normals))
        unit.normal.SetInParent()
    else:
        if preprocessor == "canny":
            unit.canny.SetInParent()
        elif preprocessor == "invert":
            unit.invert.SetInParent()
        mode = draw(st.sampled_from(["L", "RGB", "RGBA"]))
        unit.image.encoded = png(shape[1], shape[0], mode)
    return unit


def mutate_unit(draw, unit: tether_pb2.ControlUnit) -> None:
    field = draw(st.sampled_from(["model", "image", "number", "mode", "resize", "preprocessor"]))
    if field == "model":
        unit.model = draw(st.sampled_from(["pose", "", "c" * 5000]))
    elif field == "image":
        image = draw(images())
        unit.ClearField("image")
        if image is not None:
            unit.image.CopyFrom(image)
    elif field == "number":
        setattr(
            unit, draw(st.sampled_from(["weight", "start", "end"])), draw(st.sampled_from(FLOATS))
        )
    elif field == "mode":
        unit.mode = draw(st.integers(4, 2**31 - 1))
    elif field == "resize":
        unit.resize = draw(st.integers(4, 2**31 - 1))
    elif draw(st.booleans()):  # a preprocessor with settings out of range
        unit.canny.low = draw(st.sampled_from([0, 150, 256, 2**32 - 1]))
        unit.canny.high = draw(st.sampled_from([0, 100, 255, 2**32 - 1]))
    elif draw(st.booleans()):
        unit.depth.buffer = draw(st.integers(0, 6))
        unit.depth.near = draw(st.sampled_from(FLOATS))
        unit.depth.far = draw(st.sampled_from(FLOATS))
    else:
        unit.normal.space = draw(st.integers(0, 4))
        count = draw(st.sampled_from([0, 5, 16]))
        unit.normal.camera_to_world[:] = [draw(st.sampled_from(FLOATS))] * count
        unit.normal.y_down = draw(st.booleans())


def mutate_request(draw, request: tether_pb2.GenerateRequest) -> None:
    field = draw(
        st.sampled_from(
            ["size", "steps", "float", "text", "enum", "images", "units", "unit", "unit"]
        )
    )
    if field == "size":
        setattr(request, draw(st.sampled_from(["width", "height"])), draw(st.sampled_from(SIZES)))
    elif field == "steps":
        request.steps = draw(st.sampled_from([0, 5, 151, 2**32 - 1]))
    elif field == "float":
        name = draw(st.sampled_from(["guidance_scale", "strength", "mask_blur"]))
        setattr(request, name, draw(st.sampled_from(FLOATS + [65.0])))
    elif field == "text":
        name = draw(st.sampled_from(["model", "prompt", "negative_prompt", "scheduler"]))
        setattr(request, name, draw(st.sampled_from(["sdxl", "nope", "é" * 5000])))
    elif field == "enum":
        value = draw(st.integers(5, 2**31 - 1))
        name = draw(st.sampled_from(["output_format", "preview.mode", "preview.format"]))
        setattr(request.preview if "." in name else request, name.split(".")[-1], value)
    elif field == "images":
        for name in ("init_image", "mask"):
            image = draw(images())
            if image is not None:
                getattr(request, name).CopyFrom(image)
    elif field == "units":  # many units, up to past the limit
        request.controls.extend(draw(st.lists(good_units(), min_size=6, max_size=10)))
    elif request.controls:
        mutate_unit(draw, request.controls[draw(st.integers(0, len(request.controls) - 1))])


@st.composite
def generate_requests(draw) -> tether_pb2.GenerateRequest:
    """A good request, then up to three mutations (none in about a quarter of them)."""
    width, height = draw(st.sampled_from(GOOD_SIDES)), draw(st.sampled_from(GOOD_SIDES))
    request = tether_pb2.GenerateRequest(
        prompt=draw(st.sampled_from(["a castle", "", "é" * 100])),
        width=width,
        height=height,
        steps=draw(st.integers(1, 4)),
        seed=draw(st.sampled_from([0, 7, 2**64 - 1])),
        scheduler=draw(st.sampled_from(["", "euler", "euler_a", "dpmpp_2m_karras", "ddim"])),
        guidance_scale=draw(st.sampled_from([0.0, 1.0, 7.5])),
        output_format=draw(st.integers(0, 4)),
        controls=draw(st.lists(good_units(), max_size=3)),
    )
    request.preview.mode = draw(st.integers(0, 3))
    request.preview.every = draw(st.sampled_from([0, 1, 2, 2**32 - 1]))
    request.preview.format = draw(st.integers(0, 4))
    if draw(st.booleans()):  # img2img, perhaps inpainting
        request.init_image.encoded = png(width, height, "RGB")
        request.strength = draw(st.sampled_from([0.5, 1.0]))
        if draw(st.booleans()):
            request.mask.encoded = png(width, height, "L")
            request.mask_blur = draw(st.sampled_from([0.0, 4.0, 64.0]))
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        mutate_request(draw, request)
    return request


@st.composite
def preprocess_requests(draw) -> tether_pb2.PreprocessRequest:
    unit = draw(good_units())
    if draw(st.booleans()):
        mutate_unit(draw, unit)
    side = st.sampled_from(GOOD_SIDES + [0] if draw(st.booleans()) else SIZES)
    return tether_pb2.PreprocessRequest(
        control=unit, width=draw(side), height=draw(side), format=draw(st.integers(0, 6))
    )


def assert_allowed(error: grpc.RpcError | None) -> None:
    if error is None:
        return
    code, details = error.code(), error.details() or ""
    assert code in ALLOWED, f"{code.name}: {details}"
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        assert NAMES_A_FIELD.match(details), details
        assert len(details) < 1000, details  # a client's long string is not echoed whole
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert "retry-after-ms" in dict(error.trailing_metadata()), details  # a full queue


def call(method, request) -> grpc.RpcError | None:
    try:
        method(request, timeout=120)
    except grpc.RpcError as error:
        return error
    return None


def test_mutated_requests_get_only_contract_codes_and_the_server_serves_on(stub):
    @settings(BUDGET, max_examples=FUZZ_EXAMPLES)
    @given(request=generate_requests())
    def generate(request):
        assert_allowed(call(lambda r, timeout: list(stub.Generate(r, timeout=timeout)), request))

    @settings(BUDGET, max_examples=PREPROCESS_EXAMPLES)
    @given(request=preprocess_requests())
    def preprocess(request):
        assert_allowed(call(stub.Preprocess, request))

    generate()
    preprocess()
    good = tether_pb2.GenerateRequest(prompt="after", width=64, height=64, steps=2, seed=1)
    events = list(stub.Generate(good, timeout=120))
    assert events[-1].result.image.encoded.startswith(b"\x89PNG")
