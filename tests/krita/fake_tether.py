"""A stand-in Tether server for the Krita plugin's logic tests, and a real `tether.Client`
talking to it over a real port.

The plugin's calls go through the SDK unchanged (requests built and sent by the SDK,
events parsed by it); only what the server answers is made up here, so that tests can
predict it: previews of flat grey, a result of one colour, edges every 4 pixels, a job
that waits until it is cancelled or released, live results whose red channel is the id of
the frame they answer. ListModels answers with what a real Tether server answered
(`served_models`), so the limits are the server's own.
"""

from __future__ import annotations

import functools
import socket
import threading
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import tether
from tether import connection
from tether._proto.tether.v1 import image_pb2, tether_pb2, tether_pb2_grpc

PREVIEW_GREY = 128
RESULT_SEED = 7
STEPS = 3
HOLD_S = 10.0  # the longest a held job waits for cancel or release


@functools.cache
def _list_models(address: str) -> bytes:
    with grpc.insecure_channel(address) as channel:
        stub = tether_pb2_grpc.TetherStub(channel)
        return stub.ListModels(tether_pb2.ListModelsRequest(), timeout=30).SerializeToString()


def served_models(
    address: str, canny: str | None = "edges-v11", loras: tuple[str, ...] = ()
) -> tether_pb2.ListModelsResponse:
    """The real server at `address`'s answer to ListModels, with its canny control model
    renamed `canny` (the plugin must find it by kind, not by name), or without it when
    `canny` is None, and with the LoRAs `loras` listed (the stand-in ignores them)."""
    models = tether_pb2.ListModelsResponse.FromString(_list_models(address))
    for name in loras:
        models.loras.add(name=name)
    kept = [control for control in models.controls if control.kind != "canny" or canny]
    for control in kept:
        if control.kind == "canny":
            control.name = canny
    del models.controls[:]
    models.controls.extend(kept)
    return models


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_image(pixels: np.ndarray) -> image_pb2.Image:
    height, width, channels = pixels.shape
    raw = image_pb2.RawImage(
        width=width,
        height=height,
        channels=channels,
        pixel_type=image_pb2.PIXEL_TYPE_U8,
        data=pixels.astype(np.uint8).tobytes(),
    )
    return image_pb2.Image(raw=raw)


class FakeTether(tether_pb2_grpc.TetherServicer):
    """Generate: Queued, STEPS Progress events with 1/8-size grey previews, then a Result
    of one colour; with `reject`, that error instead of the result; with `hold`, it waits
    after the previews until the client cancels (`cancelled` is set) or `released` is.

    Live: records every request (`live_requests`) and answers each frame with an image of
    colour (frame id, LIVE_GREEN, LIVE_BLUE), or a LiveError for a frame whose id is in
    `refuse`; with `stale`, each answer is followed by one for the frame before (which a
    client must not show over the newer one); with `hold`, it answers only once `released`
    is set; with `vanish_after` N, it aborts the call as UNAVAILABLE after N answers, as a
    server going away. `live_ended` is set when a session ends, however it ends."""

    def __init__(
        self,
        models: tether_pb2.ListModelsResponse,
        color: tuple[int, int, int],
        reject: tether.TetherError | None,
        hold: bool,
        live: dict[str, Any],
    ) -> None:
        self.models = models
        self.color, self.reject, self.hold = color, reject, hold
        self.refuse: set[int] = live.get("refuse", set())
        self.stale: bool = live.get("stale", False)
        self.vanish_after: int | None = live.get("vanish_after")
        self.messages: list[tether_pb2.GenerateRequest] = []
        self.live_requests: list[tether_pb2.LiveRequest] = []
        self.cancelled = threading.Event()
        self.released = threading.Event()
        self.live_ended = threading.Event()

    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self.models

    def Preprocess(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Vertical lines every 4 pixels, at the requested size or the image's own."""
        raw = request.control.image.raw
        width, height = (
            (request.width, request.height) if request.width else (raw.width, raw.height)
        )
        edges = np.zeros((height, width, 3), dtype=np.uint8)
        edges[:, ::4] = 255
        return tether_pb2.PreprocessResponse(image=raw_image(edges))

    def Generate(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.messages.append(request)
        answered = threading.Event()  # the call ends with its result or a refusal

        def ended() -> None:
            # gRPC stops running this generator when the client cancels, wherever it is
            # (the previews included): a call that ends unanswered was cancelled.
            if not answered.is_set():
                self.cancelled.set()

        context.add_callback(ended)
        width, height = request.width, request.height
        yield tether_pb2.GenerateEvent(queued=tether_pb2.Queued(position=0))
        preview = np.full((height // 8, width // 8, 3), PREVIEW_GREY, dtype=np.uint8)
        for step in range(1, STEPS + 1):
            progress = tether_pb2.Progress(step=step, total=STEPS, preview=raw_image(preview))
            yield tether_pb2.GenerateEvent(progress=progress)
        if self.hold and self._client_left(context):
            return
        answered.set()
        if self.reject is not None:
            context.abort(grpc.StatusCode[self.reject.code], str(self.reject))
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = self.color
        result = tether_pb2.Result(image=raw_image(image), seed=RESULT_SEED)
        yield tether_pb2.GenerateEvent(result=result)

    def _client_left(self, context: grpc.ServicerContext) -> bool:
        """Hold until the client cancels (True; `cancelled` is set as the call ends) or
        `released` is."""
        waited = 0.0
        while context.is_active() and not self.released.is_set() and waited < HOLD_S:
            self.released.wait(0.01)
            waited += 0.01
        return not context.is_active()

    def Live(self, requests: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        context.add_callback(self.live_ended.set)
        size = (0, 0)
        answered = 0
        for request in requests:
            self.live_requests.append(request)
            if request.HasField("config"):
                size = (request.config.height, request.config.width)
                continue
            frame_id = request.frame.id
            if self.hold and self._client_left(context):
                return
            if frame_id in self.refuse:
                error = tether_pb2.LiveError(frame_id=frame_id, message="frame.image: refused")
                yield tether_pb2.LiveEvent(error=error)
            else:
                yield live_result(frame_id, size)
            answered += 1
            if self.stale and frame_id > 1:
                yield live_result(frame_id - 1, size)
            if answered == self.vanish_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")


LIVE_GREEN, LIVE_BLUE = 100, 50


def live_result(frame_id: int, size: tuple[int, int]) -> tether_pb2.LiveEvent:
    image = np.empty((*size, 3), dtype=np.uint8)
    image[:] = (frame_id, LIVE_GREEN, LIVE_BLUE)
    result = tether_pb2.LiveResult(frame_id=frame_id, image=raw_image(image))
    return tether_pb2.LiveEvent(result=result)


class FakeClient(tether.Client):
    """A real client of a `FakeTether` on a free port (or, with `down`, of a port where
    nothing listens), recording what the plugin asked for: `requests` the (prompt,
    options) of each `stream` call, `preprocessed` the (control, size) of each
    `preprocess` call, `messages` the GenerateRequests the server received. `live`: the
    live options of FakeTether (refuse, stale, vanish_after)."""

    def __init__(
        self,
        models: tether_pb2.ListModelsResponse,
        color: tuple[int, int, int] = (200, 100, 50),
        down: bool = False,
        reject: tether.TetherError | None = None,
        hold: bool = False,
        **live: Any,
    ) -> None:
        self.fake = FakeTether(models, color, reject, hold, live)
        # Messages as large as a real server takes (a large canvas's init image).
        size = ("grpc.max_receive_message_length", connection.MAX_MESSAGE_BYTES)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[size])
        tether_pb2_grpc.add_TetherServicer_to_server(self.fake, self._server)
        if down:
            port = _closed_port()
        else:
            port = self._server.add_insecure_port("127.0.0.1:0")
            self._server.start()
        super().__init__(f"127.0.0.1:{port}")
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.preprocessed: list[tuple[tether.Control, dict[str, Any]]] = []
        self.closed = False

    @property
    def messages(self) -> list[tether_pb2.GenerateRequest]:
        return self.fake.messages

    def stream(self, prompt: str, **options: Any) -> tether.Stream:
        self.requests.append((prompt, options))
        return super().stream(prompt, **options)

    def preprocess(self, control: tether.Control, **options: Any) -> np.ndarray:
        size = {"width": options.get("width"), "height": options.get("height")}
        self.preprocessed.append((control, size))
        return super().preprocess(control, **options)

    def close(self) -> None:
        self.closed = True
        super().close()
        self._server.stop(grace=None)
