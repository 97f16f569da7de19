"""The tether.v1.Tether service of the front: calls in, handed to the engine workers.

Thin on purpose, and without torch: request bytes go to an engine worker as the client
sent them (`pool.py`), which parses, checks and runs them; its events come back serialized
and are passed on as they are. Failures arrive as TetherErrors, and `STATUS_CODES` is the
one table from errors to gRPC status codes. Every call gets a request id (`request_ids`),
returned in the initial and trailing metadata and printed in each log line of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import grpc
from tether._proto.tether.v1 import tether_pb2

from . import __version__, metrics, request_ids
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
from .pool import WorkerPool

log = logging.getLogger("tether.service")

SERVICE = tether_pb2.DESCRIPTOR.services_by_name["Tether"]
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


class TetherService:
    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.live_sessions = 0

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method of the service, taking and returning bytes: requests are not
        parsed here, nor events serialized again."""
        kinds: dict[tuple[bool, bool], Callable] = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }
        methods = {
            method.name: kinds[method.client_streaming, method.server_streaming](
                getattr(self, method.name)
            )
            for method in SERVICE.methods
        }
        return grpc.method_handlers_generic_handler(SERVICE.full_name, methods)

    async def Generate(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        request_id = await _begin(context)
        began = time.perf_counter()
        finished = refused = False
        try:
            async with contextlib.aclosing(self.pool.generate(request, request_id)) as events:
                async for event, last in events:
                    finished = last
                    yield event
            context.set_trailing_metadata(((request_ids.METADATA_KEY, request_id),))
        except Exception as error:
            refused = True
            await _abort(context, _as_tether_error(error), request_id, "Generate", began)
        finally:
            # Also when the client goes away, and gRPC then drops this generator (closed
            # later, with GeneratorExit): the SDK hangs up as soon as it has the result,
            # which leaves the job finished, not cancelled.
            if not refused:
                status = grpc.StatusCode.OK if finished else grpc.StatusCode.CANCELLED
                _ended("Generate", status, began)

    async def Preprocess(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request_id = await _begin(context)
        began = time.perf_counter()
        try:
            response = await self.pool.preprocess(request, request_id)
        except asyncio.CancelledError:
            _ended("Preprocess", grpc.StatusCode.CANCELLED, began)
            raise
        except Exception as error:
            await _abort(context, _as_tether_error(error), request_id, "Preprocess", began)
        _ended("Preprocess", grpc.StatusCode.OK, began)
        context.set_trailing_metadata(((request_ids.METADATA_KEY, request_id),))
        return response

    async def Live(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        request_id = await _begin(context)
        session = LiveSession()
        try:
            async with self.pool.live(request_id, session.wake) as link:
                self.live_sessions += 1
                metrics.LIVE_SESSIONS.inc()
                log.info("live session opened")
                try:
                    async for event in session.run(link, requests):
                        yield event
                finally:
                    # Also when the client goes away: the handler is cancelled, and the
                    # session's reader and the frame on its worker stop with it.
                    self.live_sessions -= 1
                    metrics.LIVE_SESSIONS.dec()
                    log.info("live session closed (%d frames dropped)", session.dropped)
        except Exception as error:
            await _abort(context, _as_tether_error(error), request_id)

    async def ListModels(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return self.pool.listing()
        except Unavailable as error:
            await _abort(context, error)

    async def GetServerInfo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            devices, dtype = self.pool.devices()
            limits = tether_pb2.ListModelsResponse.FromString(self.pool.listing()).limits
        except Unavailable as error:
            await _abort(context, error)
        info = tether_pb2.ServerInfo(
            version=__version__,
            device=devices,
            dtype=dtype,
            limits=limits,
            live_sessions=self.live_sessions,
        )
        return info.SerializeToString()


async def _begin(context: grpc.aio.ServicerContext) -> str:
    """A new request id for this call: in the log lines it causes and in its metadata."""
    request_id = request_ids.new()
    request_ids.current.set(request_id)  # each call runs in a task of its own
    await context.send_initial_metadata(((request_ids.METADATA_KEY, request_id),))
    return request_id


def _ended(method: str, status: grpc.StatusCode, began: float) -> None:
    metrics.JOBS.labels(method, status.name).inc()
    log.info("%s %s in %.0f ms", method, status.name, (time.perf_counter() - began) * 1000)


def _as_tether_error(error: Exception) -> TetherError:
    """A bug is INTERNAL, never UNKNOWN."""
    if isinstance(error, TetherError):
        return error
    log.error("a request failed", exc_info=error)
    return Internal(f"the server failed: {type(error).__name__}: {error}")


async def _abort(
    context: grpc.aio.ServicerContext,
    error: TetherError,
    request_id: str | None = None,
    method: str | None = None,
    began: float = 0.0,
) -> NoReturn:
    """End the call with `error`'s status from STATUS_CODES (counted and logged for a
    `method` whose calls are). A full queue adds its retry hint; a call with a request id
    repeats it."""
    if method is not None:
        _ended(method, STATUS_CODES[type(error)], began)
    metadata = []
    if request_id is not None:
        metadata.append((request_ids.METADATA_KEY, request_id))
    if isinstance(error, ResourceExhausted) and error.retry_after_ms is not None:
        metadata.append((RETRY_AFTER_KEY, str(error.retry_after_ms)))
    await context.abort(STATUS_CODES[type(error)], str(error), trailing_metadata=tuple(metadata))
