"""One generation on a worker thread. No bpy here.

Blender's data may only be touched on the main thread, and the UI must keep drawing while
the server works, so the network part runs on a thread of its own and hands every event
to a queue; the main thread drains it (from a `bpy.app.timers` callback, or a loop when a
script waits) and applies what it finds. `cancel()` works from any thread.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import tether

from .connection import ClientConfig, describe_error, open_client

__all__ = ["Cancelled", "Failed", "GenerationJob", "JobEvent"]


@dataclass(frozen=True)
class Failed:
    """The job ended with an error; ``message`` is for the user, ``code`` the gRPC status
    name ("UNAVAILABLE", ...) or "" for a local failure."""

    message: str
    code: str


@dataclass(frozen=True)
class Cancelled:
    """The job stopped because `GenerationJob.cancel` was called."""


JobEvent = tether.Queued | tether.Progress | tether.Result | Failed | Cancelled
_DONE = object()


class GenerationJob:
    """Streams one GenerateRequest; events come out of `poll()` on the caller's thread."""

    def __init__(self, config: ClientConfig, prompt: str, options: dict[str, Any]) -> None:
        self._config = config
        self._prompt = prompt
        self._options = options
        self._events: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        self._stream: tether.Stream | None = None
        self._cancel_requested = False
        self._done = False
        self._thread = threading.Thread(target=self._run, name="tether-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Ask the server to stop the job before its next step. Safe from any thread."""
        with self._lock:
            self._cancel_requested = True
            stream = self._stream
        if stream is not None:
            stream.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def done(self) -> bool:
        """True once `poll()` has returned the job's last event."""
        return self._done

    def poll(self) -> list[JobEvent]:
        """The events that arrived since the last call, oldest first. Never blocks."""
        events: list[JobEvent] = []
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return events
            if item is _DONE:
                self._done = True
                return events
            events.append(item)  # type: ignore[arg-type]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker thread has ended; False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            with open_client(self._config) as client:
                stream = client.stream(self._prompt, **self._options)
                with self._lock:
                    self._stream = stream
                    cancel_now = self._cancel_requested
                if cancel_now:
                    stream.cancel()
                finished = False
                for event in stream:
                    self._events.put(event)
                    finished = isinstance(event, tether.Result)
                if not finished:
                    self._events.put(Failed("The server ended the job without a result", ""))
        except tether.Cancelled as error:
            if self._cancel_requested:
                self._events.put(Cancelled())
            else:  # the server dropped the job (e.g. it is shutting down)
                message = describe_error(error, self._config.address)
                self._events.put(Failed(message, error.code))
        except tether.TetherError as error:
            self._events.put(Failed(describe_error(error, self._config.address), error.code))
        except Exception as error:  # whatever happens must reach the user
            self._events.put(Failed(f"{type(error).__name__}: {error}", ""))
        finally:
            self._events.put(_DONE)
