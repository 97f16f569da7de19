"""The SDK on its own: sync/async parity, import boundaries, generated code freshness,
requests built from the SDK's types, image headers."""

from __future__ import annotations

import inspect
import io
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tether
import tether.aio
import tether.client
from PIL import Image
from tether import images, protocol
from tether.errors import from_status

ROOT = Path(__file__).resolve().parent.parent


def public_methods(cls) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(
    "sync, asynchronous",
    [
        (tether.Client, tether.aio.Client),
        (tether.client.Stream, tether.aio.Stream),
        (tether.live.LiveSession, tether.aio.LiveSession),
    ],
)
def test_sync_and_async_apis_are_in_parity(sync, asynchronous):
    sync_methods, async_methods = public_methods(sync), public_methods(asynchronous)
    assert sync_methods.keys() == async_methods.keys()
    for name, signature in sync_methods.items():
        assert list(signature.parameters) == list(async_methods[name].parameters), name
        for param in signature.parameters.values():
            assert param.default == async_methods[name].parameters[param.name].default, name
    assert inspect.signature(sync.__init__) == inspect.signature(asynchronous.__init__)
    # Awaitable where the sync one returns a value; streams stay plain calls in both.
    for name in sync_methods:
        if name in ("stream", "live", "cancel"):
            assert not inspect.iscoroutinefunction(getattr(asynchronous, name))
        else:
            assert inspect.iscoroutinefunction(getattr(asynchronous, name)), name


def test_sdk_imports_no_torch_and_no_server():
    code = (
        "import sys, tether, tether.aio, tether.maps, tether.cli\n"
        "heavy = ('torch', 'diffusers', 'cv2', 'tether_server', 'PIL', 'websockets')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_generated_code_is_fresh(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True
    )
    committed = ROOT / "sdk" / "tether" / "_proto"
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    current = {
        p.relative_to(committed): p.read_text()
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert fresh.keys() == current.keys()
    stale = [str(path) for path in fresh if fresh[path] != current[path]]
    assert not stale, f"regenerate with `python protos/generate.py`: {stale}"


def test_every_proto_field_and_value_is_commented():
    for proto in (ROOT / "protos" / "tether" / "v1").glob("*.proto"):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            is_field = (
                stripped.endswith(";")
                and "=" in stripped
                and not stripped.startswith(("syntax", "package", "option", "//"))
            )
            if is_field:
                assert lines[number - 1].strip().startswith("//"), f"{proto.name}:{number + 1}"


@pytest.mark.parametrize(
    "array, pixel_type, channels",
    [
        (np.zeros((4, 5), np.uint8), "PIXEL_TYPE_U8", 1),
        (np.zeros((4, 5, 3), np.float16), "PIXEL_TYPE_F16", 3),
        (np.zeros((4, 5, 4), np.float64), "PIXEL_TYPE_F32", 4),
        (np.zeros((4, 5), bool), "PIXEL_TYPE_U8", 1),
    ],
)
def test_raw_buffers_round_trip(array, pixel_type, channels):
    message = images.to_proto(array)
    raw = message.raw
    assert (raw.width, raw.height, raw.channels) == (5, 4, channels)
    assert images.image_pb2.PixelType.Name(raw.pixel_type) == pixel_type
    back = images.from_proto(message)
    assert back.shape == (4, 5, channels)


def test_float_buffers_travel_without_loss():
    depth = np.random.default_rng(0).random((3, 7), dtype=np.float32)
    back = images.from_proto(images.to_proto(depth))
    assert np.array_equal(back[:, :, 0], depth)
    assert images.to_proto(depth).raw.data == depth.astype("<f4").tobytes()


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((4, 5, 2), np.uint8), ValueError, r"control.image: expected shape \(H, W\)"),
        (np.zeros((4, 5, 3), np.int32), ValueError, "pixel type int32 is not supported"),
        (b"not an image", ValueError, "bytes must be a PNG, JPEG or WebP file"),
        (12, TypeError, "expected a numpy array"),
    ],
)
def test_bad_images_are_refused_by_the_sdk(image, error, message):
    with pytest.raises(error, match=message):
        protocol.preprocess_request(tether.Control("canny", image), None, None)


def test_request_defaults_stay_unset():
    request = protocol.generate_request("x")
    for name in ("seed", "steps", "guidance_scale", "strength"):
        assert not request.HasField(name)
    assert not request.HasField("init_image")
    request = protocol.generate_request("x", seed=0, steps=5)
    assert request.HasField("seed") and request.seed == 0 and request.steps == 5


def test_status_codes_map_to_typed_errors():
    cases = {
        grpc.StatusCode.INVALID_ARGUMENT: tether.InvalidArgument,
        grpc.StatusCode.NOT_FOUND: tether.NotFound,
        grpc.StatusCode.RESOURCE_EXHAUSTED: tether.ResourceExhausted,
        grpc.StatusCode.UNAUTHENTICATED: tether.Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: tether.PermissionDenied,
        grpc.StatusCode.UNAVAILABLE: tether.Unavailable,
        grpc.StatusCode.CANCELLED: tether.Cancelled,
        grpc.StatusCode.DEADLINE_EXCEEDED: tether.DeadlineExceeded,
        grpc.StatusCode.INTERNAL: tether.Internal,
    }
    for code, cls in cases.items():
        error = from_status(code, "steps: must be 1 to 150")
        assert type(error) is cls and error.code == code.name
        assert str(error) == "steps: must be 1 to 150"
    other = from_status(grpc.StatusCode.DATA_LOSS, "")
    assert type(other) is tether.TetherError and other.code == "DATA_LOSS"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: protocol.generate_request("x", width=-8), "width: expected a whole number from 0"),
        (lambda: protocol.generate_request("x", seed=-1), "seed: expected a whole number from 0"),
        (lambda: protocol.generate_request("x", guidance_scale="7"), "guidance_scale: expected a"),
        (lambda: protocol.generate_request("x", preview="slow"), "preview: must be one of none,"),
        (lambda: protocol.generate_request("x", output_format="gif"), "output_format: must be one"),
        (
            lambda: protocol.generate_request("x", controls=[tether.Control("c", None, mode="x")]),
            r"controls\[0\].mode: must be one of balanced, prompt, control \(got 'x'\)",
        ),
        (
            lambda: protocol.preprocess_request(tether.Control.canny(None, low=-1), None, None),
            "control.canny.low: expected a whole number",
        ),
        (
            lambda: protocol.live_config_request(tether.LiveConfig("x", steps=-2)),
            "steps: expected a whole number from 0",
        ),
        (
            lambda: protocol.live_frame_request(tether.LiveFrame(-1, np.zeros((8, 8, 3)))),
            "frame.id: expected a whole number from 0",
        ),
    ],
)
def test_requests_name_the_field_they_refuse(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_each_preprocessor_lands_in_its_field():
    buffer = np.ones((4, 4), np.float32)
    camera = np.arange(16.0).reshape(4, 4)
    units = [
        tether.Control.canny(np.zeros((4, 4, 3), np.uint8)),
        tether.Control.depth(buffer, near=0.1, far=10, reversed_z=True),
        tether.Control.normal(np.ones((4, 4, 3)), space="world", camera=camera, y_down=True),
        tether.Control("lineart", buffer, preprocessor=tether.Invert()),
        tether.Control("depth", buffer, resize="fill", mode="prompt"),
    ]
    request = protocol.generate_request("x", controls=units)
    kinds = [unit.WhichOneof("preprocessor") for unit in request.controls]
    assert kinds == ["canny", "depth", "normal", "invert", None]
    canny, depth, normal, _, plain = request.controls
    assert (canny.canny.low, canny.canny.high) == (100, 200)
    assert depth.depth.buffer == protocol.DEPTH_BUFFERS["hardware_reversed"]
    assert (round(depth.depth.near, 3), depth.depth.far) == (0.1, 10)
    assert list(normal.normal.camera_to_world) == list(range(16)) and normal.normal.y_down
    assert plain.resize == protocol.RESIZE_MODES["fill"]
    assert plain.mode == protocol.CONTROL_MODES["prompt"]
    assert images.from_proto(depth.image).dtype == np.float32  # integer buffers become floats
    with pytest.raises(TypeError, match=r"controls\[0\].preprocessor: expected tether.Canny"):
        protocol.generate_request("x", controls=[tether.Control("c", None, preprocessor="canny")])


def test_live_requests_carry_the_sdk_defaults():
    units = [tether.Control("depth", None, preprocessor=tether.Depth())]
    config = protocol.live_config_request(tether.LiveConfig("x", controls=units)).config
    assert (config.steps, config.strength, config.guidance_scale) == (2, 0.5, 1.0)
    assert not config.controls[0].HasField("image")  # frames bring the images
    colour = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    frame = protocol.live_frame_request(tether.LiveFrame(3, colour, controls=[colour]))
    assert frame.frame.id == 3 and frame.frame.image.raw.data == colour.tobytes()
    assert len(frame.frame.controls) == 1


def test_pictures_show_their_size_not_their_bytes():
    timings = tether.Timings(1.0, 2.0, 3.0, 4.0, 10.0, 1)
    result = tether.Result("raw", bytes(range(256)) * 12, 32, 32, seed=5, timings=timings)
    live = tether.LiveResult(
        "png", b"\x89PNG" * 1000, 0, 0, 7, dropped=1, latency_ms=12.5, reused=False
    )
    assert repr(result).startswith("Result(format='raw', data=<3072 bytes>, width=32, height=32")
    assert "seed=5, timings=Timings(" in repr(result)
    assert repr(live) == (
        "LiveResult(format='png', data=<4000 bytes>, width=0, height=0, frame_id=7, dropped=1, "
        "latency_ms=12.5, reused=False)"
    )


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode, fmt, options",
    [
        ("RGB", "PNG", {}),
        ("L", "JPEG", {"exif": Image.Exif()}),
        ("RGB", "JPEG", {"progressive": True, "exif": b"Exif\x00\x00" + b"\x00" * 5000}),
        ("RGB", "WEBP", {}),  # lossy: VP8
        ("RGB", "WEBP", {"lossless": True}),  # VP8L
        ("RGBA", "WEBP", {}),  # with alpha: VP8X
    ],
)
def test_image_sizes_come_from_the_header(mode, fmt, options):
    data = _encoded(Image.new(mode, (1234, 567)), fmt, **options)
    assert images.encoded_size(data) == (1234, 567)
    assert images.encoded_size(data[:20]) is None


def test_image_size_of_other_files_is_none():
    assert images.encoded_size(b"GIF89a" + bytes(100)) is None
    assert images.encoded_size(b"") is None


def test_enum_tables_are_in_protocol_only():
    enum = re.compile(
        r"_pb2\.(CONTROL_MODE|PREVIEW_MODE|IMAGE_FORMAT|RESIZE_MODE|DEPTH_BUFFER|NORMAL_SPACE)_"
    )
    sdk = ROOT / "sdk" / "tether"
    users = {
        path.name
        for path in sdk.rglob("*.py")
        if "_proto" not in path.parts and enum.search(path.read_text())
    }
    assert users == {"protocol.py"}
