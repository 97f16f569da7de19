"""Live sessions: a stream of frames in, a stream of images out, for game engines.

1. A reader task takes the client's messages as they come: a config replaces the
   session's config; a frame replaces the waiting frame (latest wins: the one it replaces
   is counted as dropped). Nothing queues without bound.
2. The session loop takes the waiting frame, turns it into an img2img job (`jobs.live_job`:
   the frame's colour image, the units' maps from the frame's buffers), runs it on the
   shared engine thread (`Worker.run`, as Generate does) and answers with the result,
   naming the frame it answers; a failure is a LiveError worded as Generate words it.
3. Temporal stability: the session's seed gives the same noise every frame, and prompt
   embeddings come from the engine's cache, so they are computed once per config.
4. With stream batching (`tether serve --stream-batch`, `stream.py`) frames go through the
   session's StreamBatch: each frame is answered by the frame the stream finishes, which
   entered steps x strength - 1 frames earlier; the result names that frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from tether._proto.tether.v1 import image_pb2, tether_pb2

from . import images, jobs
from .engine import Job, Output
from .errors import TetherError
from .stream import StreamBatch
from .worker import Done, Worker


@dataclass
class _Waiting:
    frame: tether_pb2.LiveFrame
    arrived: float


@dataclass
class _Last:
    inputs: list[np.ndarray]  # the colour image and the maps the output was made from
    image: image_pb2.Image


class LiveSession:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.config: tether_pb2.LiveConfig | None = None
        self.waiting: _Waiting | None = None
        self.dropped = 0
        self.finished = False
        self.wake = asyncio.Event()
        self.errors: list[tether_pb2.LiveEvent] = []  # config errors, sent before the next result
        self.last: _Last | None = None
        self.stream: StreamBatch | None = None  # frames in flight, with stream batching

    async def run(
        self, requests: AsyncIterator[tether_pb2.LiveRequest]
    ) -> AsyncIterator[tether_pb2.LiveEvent]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                # The reader runs only while this loop awaits, so the state read after
                # clear() is current, and a change after it sets the event again.
                self.wake.clear()
                while self.errors:
                    yield self.errors.pop(0)
                if self.waiting is not None:
                    waiting, self.waiting = self.waiting, None
                    yield await self._process(waiting)
                    continue
                if self.finished:
                    return
                await self.wake.wait()
        finally:
            reader.cancel()

    async def _read(self, requests: AsyncIterator[tether_pb2.LiveRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("message")
                if kind == "config":
                    try:
                        jobs.check_live_config(request.config, self.worker.engine)
                        self.config = request.config
                        self.last = None
                        if self.stream is not None:  # its frames in flight are dropped
                            self.dropped += self.stream.in_flight
                        if self.worker.engine.stream_batch:
                            self.stream = StreamBatch()
                    except TetherError as error:
                        self.errors.append(_error(0, f"config: {error}"))
                elif kind == "frame":
                    if self.waiting is not None:
                        self.dropped += 1
                    self.waiting = _Waiting(request.frame, time.perf_counter())
                self.wake.set()
        finally:
            self.finished = True
            self.wake.set()

    async def _process(self, waiting: _Waiting) -> tether_pb2.LiveEvent:
        frame = waiting.frame
        if self.config is None:
            return _error(frame.id, "no config yet: send a LiveConfig before frames")
        config = self.config
        event = tether_pb2.LiveEvent()
        try:
            job = await asyncio.to_thread(jobs.live_job, config, frame, self.worker.engine)
            inputs = [job.init_image, *(unit.image for unit in job.controls)]
            similar = self.last is not None and _close(
                inputs, self.last.inputs, config.reuse_threshold
            )
            stream = self.stream
            if similar and not (stream is not None and stream.in_flight):
                event.result.image.CopyFrom(self.last.image)
                return self._result(event, frame.id, waiting.arrived, reused=True)
            if stream is not None:
                # A similar frame does not enter: the call moves the frames in flight on.
                stream.submit(job, frame.id, waiting.arrived, enter=not similar)
            output = await self._run(job)
        except TetherError as error:
            return _error(frame.id, str(error))
        image = event.result.image
        await asyncio.to_thread(images.encode, output.image, config.output_format, image)
        self.last = _Last(self.last.inputs if similar else inputs, image)
        if stream is None:
            return self._result(event, frame.id, waiting.arrived, reused=False)
        self.dropped += stream.discarded
        stream.discarded = 0
        return self._result(event, *stream.answered, reused=False)

    async def _run(self, job: Job) -> Output:
        async with contextlib.aclosing(self.worker.run(job)) as events:
            async for item in events:  # queue positions: nothing to tell a live client
                if isinstance(item, Done):
                    return item.output

    def _result(
        self, event: tether_pb2.LiveEvent, frame_id: int, arrived: float, reused: bool
    ) -> tether_pb2.LiveEvent:
        """`event` with its result's image already in place (filled, not copied)."""
        result = event.result
        result.frame_id = frame_id
        result.dropped = self.dropped
        result.latency_ms = (time.perf_counter() - arrived) * 1000
        result.reused = reused
        return event


def _close(inputs: list[np.ndarray], last: list[np.ndarray], threshold: float) -> bool:
    if threshold <= 0 or len(inputs) != len(last):
        return False
    if any(a.shape != b.shape for a, b in zip(inputs, last)):
        return False
    return max(float(np.abs(a - b).mean()) for a, b in zip(inputs, last)) < threshold


def _error(frame_id: int, message: str) -> tether_pb2.LiveEvent:
    return tether_pb2.LiveEvent(error=tether_pb2.LiveError(frame_id=frame_id, message=message))
