"""Live sessions through real servers: latest-wins frames, config changes, faults."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from tether import protocol
from tether._proto.tether.v1 import tether_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from scene import render  # noqa: E402

SIZE = 64
DEPTH, NORMALS = render(SIZE, SIZE)


def colour(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def config(**changes) -> tether.LiveConfig:
    settings = dict(
        prompt="a watercolour village",
        controls=[
            tether.Control("depth", None, weight=0.8, preprocessor=tether.Depth()),
            tether.Control("normal", None, weight=0.5, end=0.5, preprocessor=tether.Normal()),
        ],
        steps=2,
        strength=0.5,
        seed=5,
    )
    return tether.LiveConfig(**{**settings, **changes})


def frame(k: int, image: np.ndarray | None = None) -> tether.LiveFrame:
    return tether.LiveFrame(k, colour(k) if image is None else image, controls=[DEPTH, NORMALS])


def rss_kib(pids: list[int]) -> int:
    """The summed RSS of processes (a server's front and engine workers)."""
    total = 0
    for pid in pids:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        total += next(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


@pytest.fixture(scope="module")
def own_server():
    running = Server().wait_serving()
    yield running
    running.stop()


def test_frames_sent_faster_than_served(own_server):
    sent = 100
    with tether.Client(own_server.address) as client, client.live(config()) as session:
        for k in range(1, 21):  # warm-up, for the memory baseline
            session.send(frame(k))
        answered = []
        for event in session:
            assert isinstance(event, tether.LiveResult), event
            answered.append(event)
            if event.frame_id == 20:
                break
        baseline = rss_kib(own_server.pids())
        for k in range(21, sent + 1):
            session.send(frame(k))
        session.close()
        answered += list(session)
    ids = [result.frame_id for result in answered]
    assert set(ids) <= set(range(1, sent + 1))
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] == sent  # the newest frame is always served
    assert answered[-1].dropped + len(answered) == sent
    assert answered[-1].dropped > 0  # frames did arrive faster than served
    assert all(r.image.shape == (SIZE, SIZE, 3) and r.latency_ms > 0 for r in answered)
    assert rss_kib(own_server.pids()) - baseline < 50_000  # KiB: no growth per frame


def test_the_server_keeps_the_newest_frame_for_clients_that_do_not_pace(server):
    """A client in another language may write every frame at once: the server drops the
    stale ones itself and answers + dropped still adds up to sent."""
    sent = 30
    requests = [protocol.live_config_request(config())]
    requests += [protocol.live_frame_request(frame(k)) for k in range(1, sent + 1)]
    with grpc.insecure_channel(server, options=[("grpc.max_send_message_length", -1)]) as channel:
        events = list(tether_pb2_grpc.TetherStub(channel).Live(iter(requests)))
    ids = [event.result.frame_id for event in events]
    assert ids == sorted(ids) and ids[-1] == sent
    assert events[-1].result.dropped + len(events) == sent
    assert events[-1].result.dropped > 0


def test_same_frame_same_image_and_config_change_takes_effect(server):
    with tether.Client(server) as client, client.live(config()) as session:
        session.send(frame(1, colour(0)))
        first = next(iter(session))
        session.send(frame(2, colour(0)))
        second = next(iter(session))
        session.configure(config(prompt="a neon city", output_format="jpeg"))
        session.send(frame(3, colour(0)))
        third = next(iter(session))
    assert np.array_equal(first.image, second.image)  # fixed noise: stable frames
    assert third.format == "jpeg" and third.data.startswith(b"\xff\xd8")
    assert np.abs(third.image.astype(int) - first.image).mean() > 5


def test_reuse_of_a_nearly_identical_frame(server):
    with tether.Client(server) as client, client.live(config(reuse_threshold=0.01)) as session:
        session.send(frame(1, colour(0)))
        first = next(iter(session))
        nearly = colour(0).copy()
        nearly[0, 0] ^= 1
        session.send(frame(2, nearly))
        second = next(iter(session))
        session.send(frame(3, colour(9)))
        third = next(iter(session))
    assert not first.reused and second.reused and not third.reused
    assert second.data == first.data


def test_bad_frames_and_configs_get_errors_and_the_session_survives(server):
    with tether.Client(server) as client, client.live(config()) as session:
        session.send(tether.LiveFrame(1, colour(1), controls=[DEPTH]))  # one image short
        error = next(iter(session))
        assert isinstance(error, tether.LiveError) and error.frame_id == 1
        assert "frame.controls: has 1 image(s); the config has 2 unit(s)" in error.message
        session.send(tether.LiveFrame(2, colour(2), controls=[colour(2)[:, :, 0], NORMALS]))
        error = next(iter(session))
        assert error.frame_id == 2
        assert "frame.controls[0].depth: needs a float buffer" in error.message
        session.configure(
            config(controls=[tether.Control("pose", None, preprocessor=tether.Canny())])
        )
        error = next(iter(session))
        assert error.frame_id == 0
        assert "config: controls[0].model: no control model 'pose'" in error.message
        session.send(
            tether.LiveFrame(3, colour(3), controls=[DEPTH, np.full_like(NORMALS, np.nan)])
        )
        error = next(iter(session))
        assert error.frame_id == 3 and "frame.controls[1].normal: contains NaN" in error.message
        session.configure(config(steps=9))
        assert "config: steps: must be 1 to 4" in next(iter(session)).message
        session.send(frame(4))  # the last good config still holds
        result = next(iter(session))
        assert isinstance(result, tether.LiveResult) and result.frame_id == 4


def test_frames_before_a_config(server):
    with grpc.insecure_channel(server) as channel:
        stub = tether_pb2_grpc.TetherStub(channel)
        request = protocol.live_frame_request(frame(7))
        events = list(stub.Live(iter([request])))
    assert [e.error.frame_id for e in events] == [7]
    assert "no config yet: send a LiveConfig before frames" in events[0].error.message


def test_disconnect_ends_the_session_on_the_server(server):
    with tether.Client(server) as client:
        session = client.live(config())
        session.send(frame(1))
        next(iter(session))
        assert client.server_info().live_sessions == 1
        session.cancel()
        deadline = time.monotonic() + 10
        while client.server_info().live_sessions != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_async_live_session(server):
    async def main():
        async with tether.aio.Client(server) as client:
            async with client.live(config()) as session:
                await session.send(frame(1, colour(0)))
                await session.send(frame(2, colour(0)))
                await session.close()
                return [event async for event in session]

    events = asyncio.run(main())
    assert [e.frame_id for e in events][-1] == 2
    assert all(isinstance(e, tether.LiveResult) for e in events)
