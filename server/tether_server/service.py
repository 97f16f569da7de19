"""The tether.v1.Tether servicer: validate, hand jobs to the worker, stream events back.

Thin on purpose: requests become engine Jobs here, the engine checks their ranges, and
`STATUS_CODES` is the one table from errors to gRPC status codes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator

import cv2
import grpc
import numpy as np
import torch
from tether._proto.tether.v1 import image_pb2, tether_pb2, tether_pb2_grpc

from . import __version__, images, jobs, preprocess, schedulers
from .engine import Job
from .errors import (
    Cancelled,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TetherError,
    Unavailable,
    invalid,
)
from .live import LiveSession
from .preprocess import MAX_INPUT_PIXELS
from .worker import Done, Failed, Queued, Ticket, Worker

log = logging.getLogger("tether.service")

STATUS_CODES: dict[type[TetherError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Cancelled: grpc.StatusCode.CANCELLED,
}

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.75
DEFAULT_MASK_BLUR = 4.0

_PREVIEW_MODES = {
    tether_pb2.PREVIEW_MODE_UNSPECIFIED: "none",
    tether_pb2.PREVIEW_MODE_NONE: "none",
    tether_pb2.PREVIEW_MODE_FAST: "fast",
    tether_pb2.PREVIEW_MODE_FULL: "full",
}


class TetherService(tether_pb2_grpc.TetherServicer):
    def __init__(self, limits: tether_pb2.Limits) -> None:
        self.limits = limits
        self.worker: Worker | None = None  # set by `ready` once the models are loaded
        self.live_sessions = 0

    def ready(self, worker: Worker) -> None:
        self.worker = worker

    async def Generate(
        self, request: tether_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tether_pb2.GenerateEvent]:
        arrived = time.perf_counter()
        try:
            worker = self._worker()
            job = await asyncio.to_thread(self._job, request, worker)
            worker.engine.check(job)
            ticket = Ticket(job, asyncio.get_running_loop())
            job.on_progress = _progress_poster(ticket, request.preview.format)
            worker.submit(ticket)
        except TetherError as error:
            await context.abort(_status(error), str(error))
        except Exception as error:  # a bug: say so as INTERNAL, never UNKNOWN
            log.exception("preparing a request failed")
            await context.abort(*_unexpected(error))
        try:
            while True:
                item = await ticket.items.get()
                if isinstance(item, tether_pb2.GenerateEvent):
                    yield item
                elif isinstance(item, Queued):
                    yield tether_pb2.GenerateEvent(queued=tether_pb2.Queued(position=item.position))
                elif isinstance(item, Failed):
                    code, message = _unexpected(item.error)
                    await context.abort(code, message)
                elif isinstance(item, Done):
                    if item.output is None:
                        await context.abort(grpc.StatusCode.CANCELLED, "the job was cancelled")
                    yield await asyncio.to_thread(_result_event, item, request, arrived)
                    return
        finally:
            # Reached when the client cancels or disconnects too: stop the job at its
            # next step, or drop it from the queue if it has not started.
            job.cancel.set()
            worker.withdraw(ticket)

    async def Preprocess(
        self, request: tether_pb2.PreprocessRequest, context: grpc.aio.ServicerContext
    ) -> tether_pb2.PreprocessResponse:
        worker = await self._worker_or_abort(context)
        try:
            response = await asyncio.to_thread(self._preprocess, request, worker)
        except TetherError as error:
            await context.abort(_status(error), str(error))
        except Exception as error:  # a bug: say so as INTERNAL, never UNKNOWN
            log.exception("preprocessing failed")
            await context.abort(*_unexpected(error))
        return response

    def _preprocess(
        self, request: tether_pb2.PreprocessRequest, worker: Worker
    ) -> tether_pb2.PreprocessResponse:
        """The map Generate would use for this unit, without touching the engine."""
        if bool(request.width) != bool(request.height):
            raise invalid("width", "set width and height together, or neither")
        if request.width % 8 or request.height % 8:
            raise invalid("width", "width and height must be multiples of 8, as in Generate")
        if request.width * request.height > self.limits.max_pixels:
            raise invalid("width", f"at most {self.limits.max_pixels} pixels")
        if request.format not in image_pb2.ImageFormat.values():
            raise invalid("format", "must be PNG, JPEG, WEBP or RAW")
        unit = request.control
        kind = jobs.control_kind(worker.engine.models, unit.model, "control")
        size = (request.width, request.height) if request.width else None
        control_map = preprocess.control_map(unit, kind, size, "control")
        response = tether_pb2.PreprocessResponse()
        images.encode(control_map, request.format, response.image)
        return response

    async def Live(
        self,
        requests: AsyncIterator[tether_pb2.LiveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tether_pb2.LiveEvent]:
        worker = await self._worker_or_abort(context)
        self.live_sessions += 1
        try:
            async for event in LiveSession(worker).run(requests):
                yield event
        finally:
            # Also when the client goes away: the handler is cancelled and the session's
            # reader and any running frame stop with it.
            self.live_sessions -= 1

    async def ListModels(
        self, request: tether_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> tether_pb2.ListModelsResponse:
        worker = await self._worker_or_abort(context)
        models = worker.engine.models
        return tether_pb2.ListModelsResponse(
            models=[
                tether_pb2.BaseModel(
                    name=models.name,
                    family=models.family,
                    default_width=models.default_size,
                    default_height=models.default_size,
                )
            ],
            controls=[
                tether_pb2.ControlModel(name=c.name, kind=c.kind) for c in models.controls.values()
            ],
            schedulers=list(schedulers.SCHEDULERS),
            limits=self.limits,
        )

    async def GetServerInfo(
        self, request: tether_pb2.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> tether_pb2.ServerInfo:
        worker = await self._worker_or_abort(context)
        models = worker.engine.models
        return tether_pb2.ServerInfo(
            version=__version__,
            device=str(models.device),
            dtype=str(models.dtype).removeprefix("torch."),
            limits=self.limits,
            live_sessions=self.live_sessions,
        )

    # -- helpers -----------------------------------------------------------------------------

    def _worker(self) -> Worker:
        if self.worker is None:
            raise Unavailable("the server is loading its models; retry when health is SERVING")
        return self.worker

    async def _worker_or_abort(self, context: grpc.aio.ServicerContext) -> Worker:
        try:
            return self._worker()
        except Unavailable as error:
            await context.abort(_status(error), str(error))

    def _job(self, request: tether_pb2.GenerateRequest, worker: Worker) -> Job:
        """GenerateRequest -> engine Job, with defaults applied and images decoded. Ranges
        are the engine's to check."""
        models = worker.engine.models
        jobs.check_model(models, request.model)
        width = request.width or models.default_size
        height = request.height or models.default_size
        controls = [
            jobs.control_input(unit, models, (width, height), f"controls[{i}]")
            for i, unit in enumerate(request.controls)
        ]
        init_image = None
        if request.HasField("init_image"):
            pixels = images.decode(request.init_image, "init_image", MAX_INPUT_PIXELS)
            init_image = images.to_rgb(pixels, "init_image")
        elif request.HasField("strength"):
            raise invalid("strength", "only applies with init_image (img2img)")
        mask = None
        if request.HasField("mask"):
            mask = _mask(request, init_image)
        if request.preview.mode not in _PREVIEW_MODES:
            raise invalid("preview.mode", "must be NONE, FAST or FULL")
        for name, fmt in (
            ("output_format", request.output_format),
            ("preview.format", request.preview.format),
        ):
            if fmt not in image_pb2.ImageFormat.values():
                raise invalid(name, "must be PNG, JPEG, WEBP or RAW")
        return Job(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=request.seed if request.HasField("seed") else secrets.randbits(32),
            steps=request.steps if request.HasField("steps") else DEFAULT_STEPS,
            guidance_scale=(
                request.guidance_scale if request.HasField("guidance_scale") else DEFAULT_GUIDANCE
            ),
            width=width,
            height=height,
            scheduler=request.scheduler or schedulers.DEFAULT_SCHEDULER,
            controls=controls,
            init_image=init_image,
            strength=request.strength if request.HasField("strength") else DEFAULT_STRENGTH,
            mask=mask,
            preview=_PREVIEW_MODES[request.preview.mode],
            preview_every=max(request.preview.every, 1),
        )


def _mask(request: tether_pb2.GenerateRequest, init_image: np.ndarray | None) -> np.ndarray:
    """The request's mask as (H, W) float32 in [0, 1], its edge blurred."""
    if init_image is None:
        raise invalid("mask", "needs init_image: inpainting repaints part of an image")
    blur = request.mask_blur if request.HasField("mask_blur") else DEFAULT_MASK_BLUR
    if not 0 <= blur <= 64:
        raise invalid("mask_blur", f"must be 0 to 64 pixels (got {blur:g})")
    pixels = images.decode(request.mask, "mask", MAX_INPUT_PIXELS)
    if pixels.shape[:2] != init_image.shape[:2]:
        height, width = init_image.shape[:2]
        raise invalid(
            "mask",
            f"is {pixels.shape[1]}x{pixels.shape[0]}; must be the output size {width}x{height}",
        )
    grey = images.to_rgb(pixels, "mask").mean(axis=2)
    if blur > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigmaX=blur)
    return np.ascontiguousarray(grey, dtype=np.float32)


def _progress_poster(ticket: Ticket, preview_format: int):
    """The job's progress callback: runs on the engine thread, so previews are encoded
    there and the asyncio loop only forwards finished messages."""

    def post(step: int, total: int, preview) -> None:
        event = tether_pb2.GenerateEvent()
        event.progress.step = step
        event.progress.total = total
        if preview is not None:
            images.encode(preview, preview_format, event.progress.preview)
        ticket.post(event)

    return post


def _result_event(done: Done, request: tether_pb2.GenerateRequest, arrived: float):
    output = done.output
    event = tether_pb2.GenerateEvent()
    result = event.result
    images.encode(output.image, request.output_format, result.image)
    result.seed = output.seed
    result.timings.queued_ms = done.queued_ms
    result.timings.prepare_ms = output.prepare_ms
    result.timings.denoise_ms = output.denoise_ms
    result.timings.decode_ms = output.decode_ms
    result.timings.batch_size = output.batch_size
    result.timings.total_ms = (time.perf_counter() - arrived) * 1000
    return event


def _status(error: TetherError) -> grpc.StatusCode:
    return STATUS_CODES[type(error)]


def _unexpected(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status for an error the engine did not expect: never UNKNOWN."""
    if isinstance(error, TetherError):
        return _status(error), str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of GPU memory; try a smaller size"
    return grpc.StatusCode.INTERNAL, f"the engine failed: {type(error).__name__}: {error}"
