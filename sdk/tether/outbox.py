"""The live outbox: what a live session writes, and when.

Frames are paced by the server: a frame is written when the one written before it has been
answered; until then a newer frame replaces the one waiting (latest wins on this side too).
So a host that renders faster than the server serves sends only frames that will be served,
each the newest one when the server is ready for it, and nothing is serialised, sent or
parsed only to be dropped. (Two frames in flight hide the round trip but, measured, doubled
the lag for no gain in frames per second on a CPU-bound server.) Configs go in order with
the frames, without waiting for answers.

`Outbox` is that rule as a state machine, with no threads or locks; two drivers wait on it:
`ThreadOutbox` for grpc's sync API (its request thread iterates it) and `AsyncOutbox` for
grpc.aio (a task iterates it, on the event loop, with no thread at all).

How a session ends:
- `close()`: no more messages. What waits is still written in order — the newest frame once
  the one before is answered — then the request stream ends.
- `cancel()`, also called when the call ends for any reason: the request stream ends now
  and a waiting frame is dropped, since no answer will ever let it go.
Messages put after either are ignored: the session is over, and iterating its results
says why.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

from ._proto.tether.v1 import tether_pb2


class Step(enum.Enum):
    """What `Outbox.take` says when it has no message to write now."""

    WAIT = "wait"  # nothing may go yet: wait for a put, an answer or the end
    END = "end"  # the request stream is over


class Outbox:
    """The outbox's state (see the module docstring); not thread-safe, the drivers are."""

    def __init__(self) -> None:
        self._waiting: deque[tether_pb2.LiveRequest] = deque()
        self._unanswered: int | None = None  # the id of the frame written and not answered
        self._closing = False
        self._ended = False
        self.dropped = 0  # frames replaced or dropped here, before they were written

    def put(self, request: tether_pb2.LiveRequest) -> None:
        """A config or a frame; a frame replaces a frame still waiting."""
        if self._closing or self._ended:
            return
        if _is_frame(request) and self._waiting and _is_frame(self._waiting[-1]):
            self._waiting[-1] = request
            self.dropped += 1
        else:
            self._waiting.append(request)

    def answered(self, frame_id: int) -> None:
        """The server answered frame `frame_id` (a result or an error)."""
        if frame_id == self._unanswered:
            self._unanswered = None

    def close(self) -> None:
        self._closing = True

    def cancel(self) -> None:
        self._ended = True
        self.dropped += sum(1 for request in self._waiting if _is_frame(request))
        self._waiting.clear()

    def take(self) -> tether_pb2.LiveRequest | Step:
        """The next message to write now, or why there is none."""
        if self._ended:
            return Step.END
        if not self._waiting:
            if self._closing:
                self._ended = True
                return Step.END
            return Step.WAIT
        if _is_frame(self._waiting[0]):
            if self._unanswered is not None:
                return Step.WAIT
            self._unanswered = self._waiting[0].frame.id
        return self._waiting.popleft()


def _is_frame(request: tether_pb2.LiveRequest) -> bool:
    return request.HasField("frame")


def _answered_id(event: tether_pb2.LiveEvent) -> int:
    answer = event.result if event.WhichOneof("event") == "result" else event.error
    return answer.frame_id


class _Driver:
    """What both drivers share: each change goes to the state machine, then `_changed`
    wakes whatever waits to write."""

    def __init__(self) -> None:
        self._outbox = Outbox()

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    def put(self, request: tether_pb2.LiveRequest) -> None:
        self._change(self._outbox.put, request)

    def answered(self, event: tether_pb2.LiveEvent) -> None:
        self._change(self._outbox.answered, _answered_id(event))

    def close(self) -> None:
        self._change(self._outbox.close)

    def cancel(self) -> None:
        self._change(self._outbox.cancel)

    def _change(self, method: Callable[..., None], *args: object) -> None:
        raise NotImplementedError


class ThreadOutbox(_Driver):
    """The outbox for grpc's sync API: `requests()` blocks the thread that iterates it;
    every other method may be called from any thread."""

    def __init__(self) -> None:
        super().__init__()
        self._condition = threading.Condition()

    def _change(self, method: Callable[..., None], *args: object) -> None:
        with self._condition:
            method(*args)
            self._condition.notify()

    def requests(self) -> Iterator[tether_pb2.LiveRequest]:
        while True:
            with self._condition:
                while (step := self._outbox.take()) is Step.WAIT:
                    self._condition.wait()
            if step is Step.END:
                return
            yield step


class AsyncOutbox(_Driver):
    """The outbox for grpc.aio: `requests()` is an async iterator, and every method is
    called on the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def _change(self, method: Callable[..., None], *args: object) -> None:
        method(*args)
        self._changed.set()

    async def requests(self) -> AsyncIterator[tether_pb2.LiveRequest]:
        while True:
            while (step := self._outbox.take()) is Step.WAIT:
                self._changed.clear()
                await self._changed.wait()
            if step is Step.END:
                return
            yield step
