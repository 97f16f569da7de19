"""Live sessions: send frames as fast as the host renders them, get images back.

    config = tether.LiveConfig("a watercolour village", controls=[
        tether.Control("depth", None, weight=0.8, preprocessor=tether.Depth()),
    ])
    with client.live(config) as session:
        session.send(tether.LiveFrame(1, colour, controls=[depth]))
        for event in session:          # tether.LiveResult or tether.LiveError
            ...

A host may send faster than frames are served: the session writes a frame only when the
server has answered the one before, and then the newest one sent (latest wins; the others
count as dropped), so each result is as fresh as the server's speed allows. Frames are
paced by the results, so read them (iterate) while sending. Results name the frame they
answer. `tether.aio.Client.live` is the async twin.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import grpc

from . import protocol
from ._proto.tether.v1 import tether_pb2
from .errors import from_status
from .types import LiveConfig, LiveError, LiveFrame, LiveResult


class Outbox:
    """Messages waiting to be written, in order, with frames paced by the server: a frame is
    written when the one written before it has been answered; until then a new frame
    replaces the one waiting here (latest wins on this side too). So a host that renders
    faster than the server serves sends only frames that will be served, each the newest
    one when the server is ready for it, and nothing is serialised, sent or parsed only to
    be dropped. (Two frames in flight hide the round trip but, measured, doubled the lag
    for no gain in frames per second on a CPU-bound server.)"""

    def __init__(self) -> None:
        self._waiting: deque[tether_pb2.LiveRequest | None] = deque()
        self._unanswered: int | None = None  # the id of the frame written and not answered
        self._condition = threading.Condition()
        self.dropped = 0

    def put(self, request: tether_pb2.LiveRequest | None) -> None:
        """A request, or None for the end of the stream."""
        with self._condition:
            last = self._waiting[-1] if self._waiting else None
            if _is_frame(request) and _is_frame(last):
                self._waiting[-1] = request
                self.dropped += 1
            else:
                self._waiting.append(request)
            self._condition.notify()

    def answered(self, event: tether_pb2.LiveEvent) -> None:
        """The server answered a frame (a result or an error); the next one may go."""
        answer = event.result if event.WhichOneof("event") == "result" else event.error
        with self._condition:
            if answer.frame_id == self._unanswered:
                self._unanswered = None
                self._condition.notify()

    def requests(self) -> Iterator[tether_pb2.LiveRequest]:
        while True:
            with self._condition:
                self._condition.wait_for(self._ready)
                request = self._waiting.popleft()
                if _is_frame(request):
                    self._unanswered = request.frame.id
            if request is None:
                return
            yield request

    def _ready(self) -> bool:
        """Configs and the end of the stream go at once; a frame once the last is answered."""
        if not self._waiting:
            return False
        return not _is_frame(self._waiting[0]) or self._unanswered is None


def _is_frame(request: tether_pb2.LiveRequest | None) -> bool:
    return request is not None and request.HasField("frame")


class LiveSession:
    """A live session (see the module docstring). `send` and `configure` return at once;
    `close` says no more frames, and iteration ends after the last result."""

    def __init__(self, stub: Any, metadata: tuple, config: LiveConfig) -> None:
        self._outbox = Outbox()
        self._outbox.put(protocol.live_config_request(config))
        # grpc's own thread takes messages from the outbox as the connection allows.
        self._call = stub.Live(self._outbox.requests(), metadata=metadata)

    def send(self, frame: LiveFrame) -> None:
        self._outbox.put(protocol.live_frame_request(frame))

    def configure(self, config: LiveConfig) -> None:
        """A new config, for the frames processed after it."""
        self._outbox.put(protocol.live_config_request(config))

    def close(self) -> None:
        self._outbox.put(None)

    def cancel(self) -> None:
        """End the session now, results in flight included."""
        self.close()
        self._call.cancel()

    def __iter__(self) -> Iterator[LiveResult | LiveError]:
        try:
            for event in self._call:
                self._outbox.answered(event)
                yield protocol.live_event_from_proto(event, self._outbox.dropped)
        except grpc.RpcError as error:
            raise from_status(error.code(), error.details()) from None

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
