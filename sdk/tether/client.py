"""The synchronous client. `tether.aio.Client` is its async twin, method for method."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np

from . import connection, images, protocol
from ._proto.tether.v1 import tether_pb2, tether_pb2_grpc
from .errors import from_status, no_result
from .live import LiveSession
from .types import Control, Event, LiveConfig, ModelList, Progress, Result, ServerInfo


class Stream:
    """The events of one generation: iterate over it; `cancel()` from any thread stops the
    job on the server before its next step (iteration then raises `tether.Cancelled`). A job
    whose server goes away before it starts is sent again (`connection.GENERATE_RESENDS`):
    its events then start over with Queued."""

    def __init__(self, send: Callable[[float | None], Any], timeout: float | None) -> None:
        self._send = send  # timeout -> a new Generate call
        self._attempts = connection.Attempts(timeout)
        self._lock = threading.Lock()
        self._cancelled = False
        self._call = send(timeout)

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                for event in self._call:
                    self._attempts.seen(event)
                    yield protocol.event_from_proto(event)
                return
            except grpc.RpcError as error:
                if not self._send_again(error.code()):
                    raise from_status(error.code(), error.details()) from None

    def _send_again(self, code: grpc.StatusCode) -> bool:
        with self._lock:
            if self._cancelled or not self._attempts.again(code):
                return False
            self._call = self._send(self._attempts.timeout())
            return True

    def result(self, on_event: Callable[[Event], None] | None = None) -> Result:
        """Wait for the Result, calling `on_event` with every Queued and Progress event
        before it; the stream is cancelled if this ends early (an error, an interrupt)."""
        try:
            for event in self:
                if isinstance(event, Result):
                    return event
                if on_event is not None:
                    on_event(event)
        finally:
            self.cancel()
        raise no_result()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            call = self._call
        call.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class Client:
    """A connection to a Tether server.

        with tether.Client("127.0.0.1:50051") as client:
            result = client.generate("a castle", controls=[tether.Control("depth", depth)])

    `target` is `host:port`, or replicas: `dns:///name:port` (every address of the name)
    or `ipv4:ip:port,ip:port`; calls go round robin (see `tether.connection`). `token` is
    sent as `authorization: Bearer <token>`; `tls` is False (plaintext), True (system
    roots) or the path of a PEM root certificate to trust.
    """

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
            grpc.secure_channel(target, creds, options=opts)
            if creds
            else grpc.insecure_channel(target, options=opts)
        )
        self._stub = tether_pb2_grpc.TetherStub(self._channel)
        self._metadata = connection.metadata(token)

    def models(self, *, timeout: float | None = None) -> ModelList:
        """Base models, control models, schedulers and limits of the server."""
        response = self._unary(self._stub.ListModels, tether_pb2.ListModelsRequest(), timeout)
        return protocol.models_from_proto(response)

    def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """Version, device, dtype and limits of the server."""
        info = self._unary(self._stub.GetServerInfo, tether_pb2.GetServerInfoRequest(), timeout)
        return protocol.server_info_from_proto(info)

    def preprocess(
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
        response = self._unary(self._stub.Preprocess, request, timeout)
        return images.array_from_raw(response.image.raw, "preprocessed")

    def live(self, config: LiveConfig) -> LiveSession:
        """Open a live session: `send` frames, iterate over results (see `tether.live`)."""
        return LiveSession(self._stub, self._metadata, config)

    def stream(self, prompt: str, *, timeout: float | None = None, **options: Any) -> Stream:
        """Start a generation and return its events (Queued, Progress..., Result).

        `options` are the keyword arguments of `tether.protocol.generate_request`:
        negative_prompt, controls, loras ([tether.Lora(name, weight)]), seed, steps,
        guidance_scale, width, height, scheduler, init_image, strength, mask (white =
        repaint, with init_image), mask_blur, tiling ("x", "y" or "xy": seamless), upscale
        (a factor: a large canvas made in tiles), tile_size, tile_overlap, model, preview
        ("fast" or "full"), preview_every,
        output_format ("raw", "png", "jpeg", "webp").
        """
        request = protocol.generate_request(prompt, **options)

        def send(timeout: float | None) -> Any:
            return self._stub.Generate(request, timeout=timeout, metadata=self._metadata)

        return Stream(send, timeout)

    def generate(
        self,
        prompt: str,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Result:
        """Generate one image and return it; `on_progress` is called for every step.
        To cancel from another thread, use `stream` and its `cancel()`. `options` as for
        `stream`."""
        stream = self.stream(prompt, timeout=timeout, **options)
        return stream.result(progress_callback(on_progress))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_status(error.code(), error.details()) from None


def progress_callback(
    on_progress: Callable[[Progress], None] | None,
) -> Callable[[Event], None] | None:
    """`Stream.result`'s `on_event` from `generate`'s `on_progress`: Progress events only
    (shared with `tether.aio`)."""
    if on_progress is None:
        return None

    def on_event(event: Event) -> None:
        if isinstance(event, Progress):
            on_progress(event)

    return on_event
