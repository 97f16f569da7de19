"""Live sessions: a stream of frames in, a stream of images out, for game engines.

1. A reader task takes the client's messages as they come: a config replaces the
   session's config; a frame replaces the waiting frame (latest wins: the one it replaces
   is counted as dropped). Nothing queues without bound.
2. The session loop takes the waiting frame, turns it into an img2img job (the frame's
   colour image, the units' maps from the frame's buffers), runs it on the shared engine
   thread and answers with the result, naming the frame it answers.
3. Temporal stability: the session's seed gives the same noise every frame, and prompt
   embeddings come from the engine's cache, so they are computed once per config.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from tether._proto.tether.v1 import image_pb2, tether_pb2

from . import images, jobs, resize, schedulers
from .engine import Job
from .errors import TetherError, invalid
from .preprocess import MAX_INPUT_PIXELS
from .worker import Failed, Queued, Ticket, Worker

MAX_STEPS = 4
DEFAULT_STEPS = 2
DEFAULT_STRENGTH = 0.5
DEFAULT_SCHEDULER = "euler"


@dataclass
class _Waiting:
    frame: tether_pb2.LiveFrame
    arrived: float


@dataclass
class _Last:
    inputs: list[np.ndarray]  # the colour image and the maps it was made from
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
                        self._check_config(request.config)
                        self.config = request.config
                        self.last = None
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

    def _check_config(self, config: tether_pb2.LiveConfig) -> None:
        """What can be checked before a frame arrives; the rest is checked per frame."""
        models = self.worker.engine.models
        jobs.check_model(models, config.model)
        if config.HasField("steps") and not 1 <= config.steps <= MAX_STEPS:
            raise invalid(
                "steps", f"must be 1 to {MAX_STEPS} for live sessions (got {config.steps})"
            )
        if config.scheduler and config.scheduler not in schedulers.SCHEDULERS:
            raise invalid("scheduler", f"unknown scheduler {config.scheduler!r}")
        for i, unit in enumerate(config.controls):
            jobs.control_kind(models, unit.model, f"controls[{i}]")
        if config.output_format not in image_pb2.ImageFormat.values():
            raise invalid("output_format", "must be PNG, JPEG, WEBP or RAW")

    async def _process(self, waiting: _Waiting) -> tether_pb2.LiveEvent:
        frame = waiting.frame
        if self.config is None:
            return _error(frame.id, "no config yet: send a LiveConfig before frames")
        config = self.config
        try:
            job, inputs = await asyncio.to_thread(_job, config, frame, self.worker)
            self.worker.engine.check(job)
        except TetherError as error:
            return _error(frame.id, str(error))
        event = tether_pb2.LiveEvent()
        if self.last is not None and _close(inputs, self.last.inputs, config.reuse_threshold):
            event.result.image.CopyFrom(self.last.image)
            return self._result(event, frame.id, waiting.arrived, reused=True)
        ticket = Ticket(job, asyncio.get_running_loop())
        try:
            self.worker.submit(ticket)
            item = await ticket.items.get()
            while isinstance(item, Queued):  # position updates: nothing to tell a live client
                item = await ticket.items.get()
        except TetherError as error:
            return _error(frame.id, str(error))
        finally:
            job.cancel.set()
            self.worker.withdraw(ticket)
        if isinstance(item, Failed) or item.output is None:
            return _error(frame.id, f"the engine failed: {getattr(item, 'error', 'cancelled')}")
        image = event.result.image
        await asyncio.to_thread(images.encode, item.output.image, config.output_format, image)
        self.last = _Last(inputs, image)
        return self._result(event, frame.id, waiting.arrived, reused=False)

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


def _job(
    config: tether_pb2.LiveConfig, frame: tether_pb2.LiveFrame, worker: Worker
) -> tuple[Job, list[np.ndarray]]:
    """A frame under a config -> an img2img job, and the inputs reuse compares."""
    models = worker.engine.models
    colour = images.to_rgb(
        images.decode(frame.image, "frame.image", MAX_INPUT_PIXELS), "frame.image"
    )
    height, width = colour.shape[:2]
    size = (config.width or width, config.height or height)
    colour = resize.fit(colour, *size, "crop", "photo")
    if len(frame.controls) != len(config.controls):
        raise invalid(
            "frame.controls",
            f"has {len(frame.controls)} image(s); the config has {len(config.controls)} unit(s), "
            "one image each, in order",
        )
    controls = []
    for i, (unit, image) in enumerate(zip(config.controls, frame.controls)):
        with_image = tether_pb2.ControlUnit()
        with_image.CopyFrom(unit)
        with_image.image.CopyFrom(image)
        controls.append(jobs.control_input(with_image, models, size, f"frame.controls[{i}]"))
    job = Job(
        prompt=config.prompt,
        negative_prompt=config.negative_prompt,
        seed=config.seed,
        steps=config.steps if config.HasField("steps") else DEFAULT_STEPS,
        guidance_scale=config.guidance_scale if config.HasField("guidance_scale") else 1.0,
        width=size[0],
        height=size[1],
        scheduler=config.scheduler or DEFAULT_SCHEDULER,
        controls=controls,
        init_image=colour,
        strength=config.strength if config.HasField("strength") else DEFAULT_STRENGTH,
    )
    return job, [colour, *(unit.image for unit in controls)]


def _close(inputs: list[np.ndarray], last: list[np.ndarray], threshold: float) -> bool:
    if threshold <= 0 or len(inputs) != len(last):
        return False
    if any(a.shape != b.shape for a, b in zip(inputs, last)):
        return False
    return max(float(np.abs(a - b).mean()) for a, b in zip(inputs, last)) < threshold


def _error(frame_id: int, message: str) -> tether_pb2.LiveEvent:
    return tether_pb2.LiveEvent(error=tether_pb2.LiveError(frame_id=frame_id, message=message))
