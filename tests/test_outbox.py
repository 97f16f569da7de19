"""The live outbox: frames paced by the server's answers, and sessions that end with a frame
still waiting (cancelled, or the call gone) leave no thread behind.

A frame waits in the outbox while the one written before it is unanswered. Cancelling a
session then must drop it and end the request stream; before `tether.outbox` the stream
waited for an answer that never came, and the thread reading it (grpc's request thread in
the sync SDK, an executor thread in the asyncio one) blocked forever — one per session.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tether
from bridge_harness import BridgeProcess, Host
from tether import bridge
from tether._proto.tether.v1 import tether_pb2
from tether.outbox import AsyncOutbox, Outbox, Step, ThreadOutbox

SIZE = 32
# More sessions than asyncio's default executor has threads on a small machine
# (min(32, cores + 4)): with one thread lost per session the last ones could not write.
SESSIONS = 8
WAIT_S = 60


def config() -> tether.LiveConfig:
    return tether.LiveConfig("a watercolour village", steps=1, strength=1.0, seed=3)


def frame(k: int) -> tether.LiveFrame:
    return tether.LiveFrame(k, np.full((SIZE, SIZE, 3), k, np.uint8))


def config_request(seed: int = 3) -> tether_pb2.LiveRequest:
    return tether.protocol.live_config_request(tether.LiveConfig("p", seed=seed))


def frame_request(k: int) -> tether_pb2.LiveRequest:
    return tether.protocol.live_frame_request(frame(k))


def answer(frame_id: int, error: bool = False) -> tether_pb2.LiveEvent:
    if error:
        return tether_pb2.LiveEvent(error=tether_pb2.LiveError(frame_id=frame_id))
    return tether_pb2.LiveEvent(result=tether_pb2.LiveResult(frame_id=frame_id))


def taken(outbox: Outbox) -> list[str]:
    """What the outbox lets go now, until it says wait or end."""
    out = []
    while not isinstance(step := outbox.take(), Step):
        out.append(
            f"frame {step.frame.id}" if step.HasField("frame") else f"config {step.config.seed}"
        )
    return [*out, step.value]


def test_a_frame_goes_when_the_last_is_answered_and_the_newest_wins() -> None:
    outbox = Outbox()
    outbox.put(config_request(1))
    outbox.put(frame_request(1))
    assert taken(outbox) == ["config 1", "frame 1", "wait"]
    for k in (2, 3, 4):  # the server is busy with frame 1: these wait here, newest wins
        outbox.put(frame_request(k))
    outbox.put(config_request(2))  # configs keep their place among the frames
    outbox.put(frame_request(5))
    assert taken(outbox) == ["wait"]
    outbox.answered(2)  # not the frame in flight
    assert taken(outbox) == ["wait"]
    outbox.answered(1)
    assert taken(outbox) == ["frame 4", "config 2", "wait"]  # configs need no answer
    outbox.answered(4)
    assert taken(outbox) == ["frame 5", "wait"]
    assert outbox.dropped == 2


def test_close_sends_what_waits_then_ends() -> None:
    outbox = Outbox()
    outbox.put(frame_request(1))
    assert taken(outbox) == ["frame 1", "wait"]
    outbox.put(frame_request(2))
    outbox.put(frame_request(3))
    outbox.close()
    outbox.put(frame_request(4))  # after close: ignored
    assert taken(outbox) == ["wait"]
    outbox.answered(1)
    assert taken(outbox) == ["frame 3", "end"]  # the newest frame is served
    assert outbox.dropped == 1


def test_cancel_drops_a_waiting_frame_and_ends_at_once() -> None:
    outbox = Outbox()
    outbox.put(frame_request(1))
    assert taken(outbox) == ["frame 1", "wait"]
    outbox.put(frame_request(2))
    outbox.put(config_request(2))
    outbox.cancel()  # frame 1 will never be answered: nothing may wait for that
    assert taken(outbox) == ["end"]
    outbox.put(frame_request(3))
    assert taken(outbox) == ["end"] and outbox.dropped == 1


def test_the_thread_driver_wakes_its_writer() -> None:
    outbox = ThreadOutbox()
    requests = outbox.requests()
    outbox.put(frame_request(1))
    assert next(requests).frame.id == 1
    outbox.put(frame_request(2))
    written: list[tether_pb2.LiveRequest] = []
    writer = threading.Thread(target=lambda: written.extend(requests))
    writer.start()
    writer.join(timeout=0.2)
    assert writer.is_alive() and not written  # frame 2 waits for frame 1's answer
    outbox.answered(answer(1, error=True))
    outbox.put(frame_request(3))
    outbox.cancel()  # from another thread than the writer's
    writer.join(timeout=5)
    assert not writer.is_alive()
    assert [request.frame.id for request in written] in ([2], [3], [])


def test_the_asyncio_driver_wakes_its_writer() -> None:
    async def main() -> list[int]:
        outbox = AsyncOutbox()
        written: list[int] = []

        async def write_all() -> None:
            async for request in outbox.requests():
                written.append(request.frame.id)

        writer = asyncio.create_task(write_all())
        outbox.put(frame_request(1))
        outbox.put(frame_request(2))  # replaces frame 1: the writer had no turn yet
        await asyncio.sleep(0.05)
        outbox.put(frame_request(3))
        await asyncio.sleep(0.05)
        assert written == [2]  # frame 3 waits for frame 2's answer
        outbox.answered(answer(2))
        await asyncio.sleep(0.05)
        outbox.put(frame_request(4))
        outbox.cancel()
        await asyncio.wait_for(writer, 5)
        return written

    assert asyncio.run(main()) == [2, 3]


def wait_for_threads(at_most: int) -> int:
    """The thread count once it is back to `at_most`, or what it is after a while."""
    deadline = time.monotonic() + 10
    while threading.active_count() > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def test_sync_cancel_with_a_frame_pending(server: str) -> None:
    with tether.Client(server) as client:
        with client.live(config()) as session:  # warm: grpc's own threads exist now
            session.send(frame(1))
            next(iter(session))
        before = wait_for_threads(threading.active_count())
        for _ in range(SESSIONS):
            session = client.live(config())
            events = iter(session)
            session.send(frame(1))
            next(events)  # frame 1 answered
            session.send(frame(2))  # written at once
            time.sleep(0.1)
            session.send(frame(3))  # waits behind frame 2, which nobody will read
            session.cancel()
        with client.live(config()) as session:
            session.send(frame(9))
            assert next(iter(session)).frame_id == 9
    assert wait_for_threads(before) <= before


async def cancel_sessions_with_a_frame_pending(server: str) -> dict[str, int]:
    """The asyncio twin of the test above; run in its own process by the test below."""
    async with tether.aio.Client(server) as client:
        async with client.live(config()) as session:
            await session.send(frame(1))
            await anext(aiter(session))
        before = wait_for_threads(threading.active_count())
        for _ in range(SESSIONS):
            async with client.live(config()) as session:
                events = aiter(session)
                await session.send(frame(1))
                await anext(events)
                await session.send(frame(2))
                await asyncio.sleep(0.1)
                await session.send(frame(3))
            # Leaving `async with` cancelled the session with frame 3 waiting.
        async with client.live(config()) as session:
            await session.send(frame(9))
            result = await asyncio.wait_for(anext(aiter(session)), WAIT_S)
        return {"before": before, "after": wait_for_threads(before), "frame_id": result.frame_id}


def test_async_cancel_with_a_frame_pending(server: str) -> None:
    """In a process of its own: a thread blocked for good would also hang its exit, which
    waits for the executor's threads."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, server], capture_output=True, text=True, timeout=2 * WAIT_S
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the asyncio process never ended (a thread blocked for good): {hung.stderr}")
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout)
    assert counts["frame_id"] == 9  # a new session still writes and gets its result
    assert counts["after"] <= counts["before"]


def test_bridge_host_disconnects_with_frames_pending(server: str) -> None:
    """`tether bridge` cancels a session whenever its host goes: 100 hosts leave with a
    frame waiting behind an unanswered one; the bridge still serves, with no thread more."""
    running = BridgeProcess("--server", server)
    config = json.dumps({"type": "config", "prompt": "p", "steps": 1, "strength": 1.0})
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    try:
        with Host.connect(running.address) as host:  # warm: the bridge's channel is up
            host.ws.send(config)
            host.ws.send(bridge.pack_frame(1, [image]))
            host.result()
        before = running.threads()
        for _ in range(100):
            with Host.connect(running.address) as host:
                host.ws.send(config)
                host.ws.send(bridge.pack_frame(1, [image]))
                time.sleep(0.02)  # the bridge writes frame 1 to the server...
                host.ws.send(bridge.pack_frame(2, [image]))  # ...and this one waits
        with Host.connect(running.address, "/viewer") as viewer:  # every host's handler ended
            # Viewers also get results (binary) of hosts still being served: skip them.
            while True:
                message = viewer.ws.recv(timeout=30)
                if isinstance(message, str) and json.loads(message)["hosts"] == 0:
                    break
        with Host.connect(running.address) as host:
            host.ws.send(config)
            host.ws.send(bridge.pack_frame(9, [image]))
            assert host.result().frame_id == 9
        deadline = time.monotonic() + 10
        while (after := running.threads()) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert after <= before
    finally:
        running.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(cancel_sessions_with_a_frame_pending(sys.argv[1]))))
