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

SIZE = 32
# More sessions than asyncio's default executor has threads on a small machine
# (min(32, cores + 4)): with one thread lost per session the last ones could not write.
SESSIONS = 8
WAIT_S = 60


def config() -> tether.LiveConfig:
    return tether.LiveConfig("a watercolour village", steps=1, strength=1.0, seed=3)


def frame(k: int) -> tether.LiveFrame:
    return tether.LiveFrame(k, np.full((SIZE, SIZE, 3), k, np.uint8))


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
    assert wait_for_threads(before) == before


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
    assert counts["after"] == counts["before"]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(cancel_sessions_with_a_frame_pending(sys.argv[1]))))
