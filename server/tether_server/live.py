"""Live sessions in the front: a stream of frames in, a stream of images out, for game engines.

1. A reader task takes the client's messages as they come (parsed only to tell a config
   from a frame): a config goes to the session's engine worker at once; a frame replaces
   the waiting frame (latest wins: the one it replaces is counted as dropped). Nothing
   queues without bound.
2. The session loop sends the waiting frame to the worker when the worker has answered
   the one before (`pool.LiveLink`), and passes the worker's events (results, LiveErrors)
   to the client as they come. The worker makes each frame into an img2img job and runs
   it (`live_frames.py`).
3. When the worker exits, the session gets a LiveError and goes on on another worker, or
   on this one once it is started again, with its config.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from tether._proto.tether.v1 import tether_pb2

from . import metrics
from .errors import invalid
from .pool import LiveLink


@dataclass
class _Waiting:
    data: bytes  # the LiveRequest as the client sent it
    frame_id: int
    arrived: float


class LiveSession:
    def __init__(self) -> None:
        self.waiting: _Waiting | None = None
        self.dropped = 0
        self.finished = False
        self.failure: Exception | None = None  # a message that is not a LiveRequest
        self.wake = asyncio.Event()

    async def run(self, link: LiveLink, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The session's LiveEvents, serialized, until the client has sent its last frame
        and it is answered."""
        reader = asyncio.create_task(self._read(link, requests))
        try:
            while True:
                # The reader and the pool change the state only while this loop awaits, so
                # what is read after clear() is current, and a change after it wakes us.
                self.wake.clear()
                while link.events:
                    yield link.events.popleft()
                if self.failure is not None:
                    raise self.failure
                if self.waiting is not None and link.can_take_frame:
                    waiting, self.waiting = self.waiting, None
                    waited_ms = (time.perf_counter() - waiting.arrived) * 1000
                    link.frame(waiting.data, waiting.frame_id, self.dropped, waited_ms)
                    continue
                if self.finished and self.waiting is None and link.frame_id is None:
                    return
                await self.wake.wait()
        finally:
            reader.cancel()

    async def _read(self, link: LiveLink, requests: AsyncIterator[bytes]) -> None:
        try:
            async for data in requests:
                try:
                    request = tether_pb2.LiveRequest.FromString(data)
                except DecodeError:
                    self.failure = invalid("request", "is not a tether.v1.LiveRequest message")
                    return
                kind = request.WhichOneof("message")
                if kind == "config":
                    link.config(data)
                elif kind == "frame":
                    if self.waiting is not None:
                        self.dropped += 1
                        metrics.LIVE_FRAMES.labels("dropped").inc()
                    self.waiting = _Waiting(data, request.frame.id, time.perf_counter())
                self.wake.set()
        finally:
            self.finished = True
            self.wake.set()
