"""The asyncio client: `tether.Client`'s twin, method for method (a test holds them equal)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import numpy as np

from . import connection, images, protocol
from ._proto.tether.v1 import tether_pb2, tether_pb2_grpc
from .client import progress_callback
from .errors import Cancelled, Internal, from_status, no_result
from .outbox import AsyncOutbox
from .types import (
    Control,
    Event,
    LiveConfig,
    LiveEvent,
    LiveFrame,
    ModelList,
    Progress,
    Result,
    ServerInfo,
)


class Stream:
    """The events of one generation: `async for` over it; `cancel()` stops the job on the
    server before its next step (iteration then raises `tether.Cancelled`). A job whose
    server goes away before it starts is sent again, as `tether.Stream` does."""

    def __init__(self, send: Callable[[float | None], Any], timeout: float | None) -> None:
        self._send = send  # timeout -> a new Generate call
        self._attempts = connection.Attempts(timeout)
        self._cancelled = False
        self._call = send(timeout)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            try:
                async for event in self._call:
                    self._attempts.seen(event)
                    yield protocol.event_from_proto(event)
                break
            except grpc.RpcError as error:
                if self._cancelled or not self._attempts.again(error.code()):
                    raise from_status(error.code(), error.details()) from None
                self._call = self._send(self._attempts.timeout())
            except grpc.aio.AbortError as error:
                raise Internal(str(error)) from None
        if self._call.cancelled():
            raise Cancelled("the call was cancelled")

    async def result(self, on_event: Callable[[Event], None] | None = None) -> Result:
        """Wait for the Result, calling `on_event` with every Queued and Progress event
        before it; the stream is cancelled if this ends early (an error, a cancellation)."""
        try:
            async for event in self:
                if isinstance(event, Result):
                    return event
                if on_event is not None:
                    on_event(event)
        finally:
            self.cancel()
        raise no_result()

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()


class LiveSession:
    """A live session: `async with client.live(config) as session`, then `await
    session.send(frame)` and `async for event in session` (see `tether.live`)."""

    def __init__(self, stub: Any, metadata: tuple, config: LiveConfig) -> None:
        self._call = stub.Live(metadata=metadata)
        self._config = config
        # The same rule as the sync session's outbox, driven by a task instead of a thread.
        self._outbox = AsyncOutbox()
        self._writer: asyncio.Task | None = None
        self._call.add_done_callback(lambda call: self._stop_writing())

    async def send(self, frame: LiveFrame) -> None:
        self._outbox.put(protocol.live_frame_request(frame))

    async def configure(self, config: LiveConfig) -> None:
        """A new config, for the frames processed after it."""
        self._outbox.put(protocol.live_config_request(config))

    async def close(self) -> None:
        self._outbox.close()

    def cancel(self) -> None:
        """End the session now, results in flight and a frame waiting to be sent included."""
        self._call.cancel()
        self._stop_writing()

    async def __aiter__(self) -> AsyncIterator[LiveEvent]:
        try:
            while (event := await self._call.read()) is not grpc.aio.EOF:
                self._outbox.answered(event)
                yield protocol.live_event_from_proto(event, self._outbox.dropped)
        except grpc.RpcError as error:
            raise from_status(error.code(), error.details()) from None

    async def __aenter__(self) -> LiveSession:
        self._outbox.put(protocol.live_config_request(self._config))
        self._writer = asyncio.create_task(self._write_all())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()
        if self._writer is not None:
            await asyncio.wait({self._writer})

    def _stop_writing(self) -> None:
        """The call is over: the outbox drops what waits, and the writer stops, also in
        the middle of a write (grpc.aio can leave one pending for good once the call is
        cancelled)."""
        self._outbox.cancel()
        if self._writer is not None:
            self._writer.cancel()

    async def _write_all(self) -> None:
        async for request in self._outbox.requests():
            try:
                await self._call.write(request)
            except (grpc.RpcError, asyncio.InvalidStateError):
                return  # the call ended; iteration reports why
        if not self._call.done():
            await self._call.done_writing()


class Client:
    """An asyncio connection to a Tether server; see `tether.Client` for the arguments."""

    def __init__(
        self,
        target: str = connection.DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: connection.TLS = False,
        max_message_bytes: int = connection.MAX_MESSAGE_BYTES,
    ) -> None:
        creds = connection.credentials(tls)
        opts = connection.channel_options(max_message_bytes)
        self._channel = (
            grpc.aio.secure_channel(target, creds, options=opts)
            if creds
            else grpc.aio.insecure_channel(target, options=opts)
        )
        self._stub = tether_pb2_grpc.TetherStub(self._channel)
        self._metadata = connection.metadata(token)

    async def models(self, *, timeout: float | None = None) -> ModelList:
        """Base models, control models, schedulers and limits of the server."""
        request = tether_pb2.ListModelsRequest()
        return protocol.models_from_proto(
            await self._unary(self._stub.ListModels, request, timeout)
        )

    async def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """Version, device, dtype and limits of the server."""
        request = tether_pb2.GetServerInfoRequest()
        info = await self._unary(self._stub.GetServerInfo, request, timeout)
        return protocol.server_info_from_proto(info)

    async def preprocess(
        self,
        control: Control,
        *,
        width: int | None = None,
        height: int | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """The control map the server would use for `control`, fitted to width x height
        like Generate does (or at the image's size): (H, W, 3) uint8, to show a host's user."""
        request = protocol.preprocess_request(control, width, height)
        response = await self._unary(self._stub.Preprocess, request, timeout)
        return images.array_from_raw(response.image.raw, "preprocessed")

    def live(self, config: LiveConfig) -> LiveSession:
        """Open a live session; use it with `async with` (see `tether.live`)."""
        return LiveSession(self._stub, self._metadata, config)

    def stream(self, prompt: str, *, timeout: float | None = None, **options: Any) -> Stream:
        """Start a generation and return its events; options as for `tether.Client.stream`."""
        request = protocol.generate_request(prompt, **options)

        def send(timeout: float | None) -> Any:
            return self._stub.Generate(request, timeout=timeout, metadata=self._metadata)

        return Stream(send, timeout)

    async def generate(
        self,
        prompt: str,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Result:
        """Generate one image and return it; `on_progress` is called for every step."""
        stream = self.stream(prompt, timeout=timeout, **options)
        return await stream.result(progress_callback(on_progress))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_status(error.code(), error.details()) from None
