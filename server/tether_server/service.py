"""The tether.v1.Tether servicer: requests to `jobs` and the worker, events back.

Thin on purpose: `jobs` turns requests into checked engine Jobs, `Worker.run` runs them and
raises failures already worded, and `STATUS_CODES` is the one table from errors to gRPC
status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
import numpy as np
from tether._proto.tether.v1 import tether_pb2, tether_pb2_grpc

from . import __version__, images, jobs, schedulers
from .errors import (
    Cancelled,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TetherError,
    Unavailable,
)
from .live import LiveSession
from .worker import Done, Queued, Worker

log = logging.getLogger("tether.service")

STATUS_CODES: dict[type[TetherError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Cancelled: grpc.StatusCode.CANCELLED,
    Internal: grpc.StatusCode.INTERNAL,
}
# Trailing metadata of RESOURCE_EXHAUSTED for a full queue: when to retry, in ms. A request
# over a size limit is INVALID_ARGUMENT instead: retrying it cannot succeed.
RETRY_AFTER_KEY = "retry-after-ms"


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
            job = await asyncio.to_thread(
                jobs.generate_job, request, worker.engine, worker.check_room
            )
            progress = functools.partial(_progress_event, request.preview.format)
            async with contextlib.aclosing(worker.run(job, progress)) as events:
                async for item in events:
                    if isinstance(item, Queued):
                        yield tether_pb2.GenerateEvent(
                            queued=tether_pb2.Queued(position=item.position)
                        )
                    elif isinstance(item, Done):
                        yield await asyncio.to_thread(
                            _result_event, item, request.output_format, arrived
                        )
                    else:  # a progress event, made on the engine thread
                        yield item
        except Exception as error:
            await _abort(context, error)

    async def Preprocess(
        self, request: tether_pb2.PreprocessRequest, context: grpc.aio.ServicerContext
    ) -> tether_pb2.PreprocessResponse:
        try:
            worker = self._worker()
            return await asyncio.to_thread(_preprocess_response, request, worker)
        except Exception as error:
            await _abort(context, error)

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
        except Exception as error:  # a frame's errors are LiveErrors: this is a bug
            await _abort(context, error)
        finally:
            # Also when the client goes away: the handler is cancelled and the session's
            # reader and any running frame stop with it.
            self.live_sessions -= 1

    async def ListModels(
        self, request: tether_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> tether_pb2.ListModelsResponse:
        worker = await self._worker_or_abort(context)
        models, catalog = worker.engine.models, worker.engine.catalog
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
            loras=[tether_pb2.LoraModel(name=name) for name in catalog.loras],
            embeddings=[tether_pb2.Embedding(name=name) for name in catalog.embeddings],
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
            await _abort(context, error)


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
    """End the call with `error`'s status from STATUS_CODES; a bug is INTERNAL, never
    UNKNOWN. A full queue adds its retry hint."""
    if not isinstance(error, TetherError):
        log.error("a request failed", exc_info=error)
        error = Internal(f"the server failed: {type(error).__name__}: {error}")
    retry = error.retry_after_ms if isinstance(error, ResourceExhausted) else None
    metadata = () if retry is None else ((RETRY_AFTER_KEY, str(retry)),)
    await context.abort(STATUS_CODES[type(error)], str(error), trailing_metadata=metadata)


def _preprocess_response(
    request: tether_pb2.PreprocessRequest, worker: Worker
) -> tether_pb2.PreprocessResponse:
    control_map = jobs.preprocess_map(request, worker.engine)
    response = tether_pb2.PreprocessResponse()
    images.encode(control_map, request.format, response.image)
    return response


def _progress_event(
    preview_format: int, step: int, total: int, preview: np.ndarray | None
) -> tether_pb2.GenerateEvent:
    """A step's event, made on the engine thread (`Worker.run`): previews are encoded there,
    not on the event loop."""
    event = tether_pb2.GenerateEvent()
    event.progress.step = step
    event.progress.total = total
    if preview is not None:
        images.encode(preview, preview_format, event.progress.preview)
    return event


def _result_event(done: Done, output_format: int, arrived: float) -> tether_pb2.GenerateEvent:
    output = done.output
    event = tether_pb2.GenerateEvent()
    result = event.result
    images.encode(output.image, output_format, result.image)
    result.seed = output.seed
    result.timings.queued_ms = done.queued_ms
    result.timings.prepare_ms = output.prepare_ms
    result.timings.denoise_ms = output.denoise_ms
    result.timings.decode_ms = output.decode_ms
    result.timings.batch_size = output.batch_size
    result.timings.total_ms = (time.perf_counter() - arrived) * 1000
    return event
