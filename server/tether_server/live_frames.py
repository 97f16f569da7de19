"""A live session's frames inside an engine worker: config, img2img per frame, reuse.

The front (`live.py`) reads the client's messages, keeps only the newest waiting frame and
sends this worker one frame at a time; configs come as they are sent. Here:
1. A config is checked (`jobs.check_live_config`) and replaces the session's; a bad one is
   a LiveError and the last good config stays.
2. A frame becomes an img2img job (`jobs.live_job`: the frame's colour image, the units'
   maps from the frame's buffers), runs on the engine thread (`Worker.run`, as Generate's
   jobs do) and is answered with its result, naming the frame; a failure is a LiveError
   worded as Generate words it.
3. Temporal stability: the session's seed gives the same noise every frame, and prompt
   embeddings come from the engine's cache, so they are computed once per config.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import numpy as np
from tether._proto.tether.v1 import image_pb2, tether_pb2

from . import images, jobs
from .engine import Job, Output
from .errors import TetherError
from .worker import Done, Worker


@dataclass
class _Last:
    inputs: list[np.ndarray]  # the colour image and the maps it was made from
    image: image_pb2.Image


class LiveFrames:
    """One live session's state in a worker."""

    def __init__(self, worker: Worker, request_id: str) -> None:
        self.worker = worker
        self.request_id = request_id
        self.config: tether_pb2.LiveConfig | None = None
        self.last: _Last | None = None

    def configure(self, config: tether_pb2.LiveConfig) -> tether_pb2.LiveEvent | None:
        """Take `config`, or keep the last good one and return the LiveError to send."""
        try:
            jobs.check_live_config(config, self.worker.engine)
        except TetherError as error:
            return error_event(0, f"config: {error}")
        self.config = config
        self.last = None
        return None

    async def process(
        self, frame: tether_pb2.LiveFrame, dropped: int, waited_ms: float
    ) -> tuple[tether_pb2.LiveEvent, str]:
        """The frame's event and its outcome: result, reused or error. `waited_ms` is the
        time the frame spent in the front, for the result's latency."""
        received = time.perf_counter()
        if self.config is None:
            return error_event(frame.id, "no config yet: send a LiveConfig before frames"), "error"
        config = self.config
        event = tether_pb2.LiveEvent()
        result = event.result
        try:
            job = await asyncio.to_thread(jobs.live_job, config, frame, self.worker.engine)
            inputs = [job.init_image, *(unit.image for unit in job.controls)]
            reused = self.last is not None and _close(
                inputs, self.last.inputs, config.reuse_threshold
            )
            if reused:
                result.image.CopyFrom(self.last.image)
            else:
                output = await self._run(job)
                await asyncio.to_thread(
                    images.encode, output.image, config.output_format, result.image
                )
                self.last = _Last(inputs, result.image)
        except TetherError as error:
            return error_event(frame.id, str(error)), "error"
        result.frame_id = frame.id
        result.dropped = dropped
        result.latency_ms = waited_ms + (time.perf_counter() - received) * 1000
        result.reused = reused
        return event, "reused" if reused else "result"

    async def _run(self, job: Job) -> Output:
        async with contextlib.aclosing(self.worker.run(job)) as events:
            async for item in events:  # queue positions: nothing to tell a live client
                if isinstance(item, Done):
                    return item.output


def error_event(frame_id: int, message: str) -> tether_pb2.LiveEvent:
    return tether_pb2.LiveEvent(error=tether_pb2.LiveError(frame_id=frame_id, message=message))


def _close(inputs: list[np.ndarray], last: list[np.ndarray], threshold: float) -> bool:
    if threshold <= 0 or len(inputs) != len(last):
        return False
    if any(a.shape != b.shape for a, b in zip(inputs, last)):
        return False
    return max(float(np.abs(a - b).mean()) for a, b in zip(inputs, last)) < threshold
