"""What one request may make a real server allocate (the bound in `tether_server.jobs`).

The peak RSS of the server's processes (the front and its engine worker; VmHWM, reset
through /proc/PID/clear_refs before each call) is read around each request:
- requests over a limit (issue 16's 12000 x 12000 with three units, 16000 x 16000 with
  eight, a 1 x 4096 control image that covering the output would blow up, a live frame
  larger than the output limit) are refused INVALID_ARGUMENT, naming the field, while the
  peak stays within a few MiB;
- a request whose control image is as large as it may be per pixel stays within the
  documented INPUT_BYTES_PER_PIXEL.
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from PIL import Image
from tether._proto.tether.v1 import tether_pb2, tether_pb2_grpc
from tether_server.jobs import INPUT_BYTES_PER_PIXEL

MIB = 2**20
# What a refused request may still cost: gRPC's and protobuf's own small allocations.
REFUSAL_SLACK = 16 * MIB


@pytest.fixture(scope="module")
def fresh():
    """A server of its own, so that no other test's request sets its memory peak."""
    running = Server().wait_serving()
    with grpc.insecure_channel(running.address) as channel:
        yield running, tether_pb2_grpc.TetherStub(channel)
    running.stop()


class Peak:
    """The growth of processes' peak RSS over a block, from their RSS at the start, summed."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def _kib(self, pid: int, key: str) -> int:
        status = Path(f"/proc/{pid}/status")
        for line in status.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} in {status}")

    def __enter__(self) -> Peak:
        for pid in self.pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start = sum(self._kib(pid, "VmRSS:") for pid in self.pids) * 1024
        return self

    def __exit__(self, *exc) -> None:
        peak = sum(self._kib(pid, "VmHWM:") for pid in self.pids) * 1024
        self.grown = peak - self.start


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def small_units(count: int) -> list[tether_pb2.ControlUnit]:
    edges = png(np.full((64, 64), 255, dtype=np.uint8))
    models = ["canny", "depth", "normal"]
    return [
        tether_pb2.ControlUnit(model=models[k % 3], image={"encoded": edges}) for k in range(count)
    ]


def refused(stub, request: tether_pb2.GenerateRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(request, timeout=60))
    return caught.value


def test_a_huge_size_with_units_is_refused_before_anything_is_allocated(fresh):
    running, stub = fresh
    for side, count in ((12000, 3), (16000, 8)):
        request = tether_pb2.GenerateRequest(
            prompt="x", width=side, height=side, steps=2, controls=small_units(count)
        )
        assert request.ByteSize() < 12_000  # a small message ...
        with Peak(running.pids()) as peak:
            error = refused(stub, request)
        # ... that used to make the server resize every unit's map to side x side first.
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(f"width: {side}x{side} is {side * side} pixels")
        assert peak.grown < REFUSAL_SLACK, f"{peak.grown / MIB:.0f} MiB"
    good = tether_pb2.GenerateRequest(
        prompt="x", width=64, height=64, steps=1, controls=small_units(3)
    )
    assert list(stub.Generate(good, timeout=60))[-1].HasField("result")


def test_a_thin_image_that_covering_would_blow_up_is_refused(fresh):
    """Cropping a 4096 x 1 image to cover 1024 x 1024 would resample it to 4194304 x 1024
    (48 GiB of float32) before cropping."""
    running, stub = fresh
    thin = tether.images.to_proto(np.zeros((1, 4096), dtype=np.uint8))
    unit = tether_pb2.ControlUnit(model="canny", image=thin)
    request = tether_pb2.GenerateRequest(
        prompt="x", width=1024, height=1024, steps=1, controls=[unit]
    )
    with Peak(running.pids()) as peak:
        error = refused(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("controls[0].image: a 4096x1 image covers 1024x1024 only")
    assert "JUST_RESIZE" in error.details()
    assert peak.grown < REFUSAL_SLACK, f"{peak.grown / MIB:.0f} MiB"
    unit.resize = tether_pb2.RESIZE_MODE_JUST_RESIZE  # stretching it is fine
    small = tether_pb2.GenerateRequest(prompt="x", width=64, height=64, steps=1, controls=[unit])
    assert list(stub.Generate(small, timeout=60))[-1].HasField("result")


def test_a_live_frame_over_the_output_limit_is_refused_before_decoding(fresh):
    running, _ = fresh
    frame = np.full((4096, 4096, 3), 90, dtype=np.uint8)  # 4096^2 > 1024^2 pixels
    depth = np.full((64, 64), 5.0, dtype=np.float32)
    config = tether.LiveConfig(
        "x", controls=[tether.Control("depth", None, preprocessor=tether.Depth())] * 3
    )
    with tether.Client(running.address) as client, client.live(config) as session:
        session.send(tether.LiveFrame(1, png(frame[:64, :64]), controls=[depth] * 3))
        assert isinstance(next(iter(session)), tether.LiveResult)
        encoded = png(frame)
        with Peak(running.pids()) as peak:
            session.send(tether.LiveFrame(2, encoded, controls=[depth] * 3))
            error = next(iter(session))
        assert isinstance(error, tether.LiveError) and error.frame_id == 2
        assert error.message.startswith("width: 4096x4096 is 16777216 pixels")
        assert peak.grown < REFUSAL_SLACK + len(encoded), f"{peak.grown / MIB:.0f} MiB"


def large_input(kind: str, side: int) -> tether_pb2.ControlUnit:
    rng = np.random.default_rng(0)
    if kind == "canny":
        image = png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        return tether_pb2.ControlUnit(model="canny", image={"encoded": image}, canny={})
    if kind == "depth":
        depth = rng.uniform(1, 10, (side, side)).astype(np.float32)
        return tether_pb2.ControlUnit(model="depth", image=tether.images.to_proto(depth), depth={})
    buffer = np.zeros((side, side, 4), dtype=np.float32)  # the top half holds geometry
    if kind == "normal":
        buffer[: side // 2, :, 2] = 1
        return tether_pb2.ControlUnit(
            model="normal", image=tether.images.to_proto(buffer), normal={}
        )
    buffer[: side // 2, :, 2] = -rng.uniform(1, 10, (side // 2, side))
    positions = tether_pb2.DepthPreprocessor(buffer=tether_pb2.DEPTH_BUFFER_POSITIONS)
    return tether_pb2.ControlUnit(
        model="depth", image=tether.images.to_proto(buffer), depth=positions
    )


@pytest.mark.parametrize("kind", ["depth", "normal", "positions", "canny"])
def test_one_image_stays_within_the_documented_bytes_per_pixel(fresh, kind):
    """The largest per-pixel costs: float buffers (RGBA float32 for normals and positions)
    through the depth and normal conversions and a masked resample, canny on a decoded
    file. Measured at 1024 x 1024."""
    running, stub = fresh
    side = 1024
    request = tether_pb2.PreprocessRequest(control=large_input(kind, side), width=64, height=64)
    stub.Preprocess(request, timeout=60)  # the first of its kind: lazy imports, pools
    with Peak(running.pids()) as peak:
        stub.Preprocess(request, timeout=60)
    # The message arrives in the front and in the worker, which parses it (three times its
    # size), then the image's working set.
    bound = 3 * request.ByteSize() + INPUT_BYTES_PER_PIXEL * side * side + REFUSAL_SLACK
    assert peak.grown < bound, f"{kind}: {peak.grown / MIB:.0f} MiB > {bound / MIB:.0f} MiB"
