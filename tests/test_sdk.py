"""The SDK on its own: sync/async parity, import boundaries, generated code freshness."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tether
import tether.aio
import tether.client
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
        tether.Control("canny", image).to_proto("control")


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
