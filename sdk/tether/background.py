"""Work for host applications (Blender, Krita, ...) off their UI thread, and failures in
words their users can act on.

A host's UI thread must never wait on the network, and the host's own API (bpy, Krita's)
may only be used on that thread. So a `Job` runs one piece of work, typically one
generation, on a worker thread, and the UI thread collects what happened from a timer:

    def work(task: background.Task) -> tether.Result:
        with tether.Client(address) as client:
            return task.generate(client, "a castle", steps=20, preview="fast")

    job = background.Job(work, describe=lambda error: background.describe(error, address))
    job.start()
    ...
    for event in job.poll():  # on the UI thread, from its timer; never blocks
        ...                   # tether.Queued and tether.Progress (previews) in order,
                              # then exactly one Done(result), Failed(message) or Stopped()
    job.cancel()              # from any thread, at any time: even before the request is sent

`work` may do more than generate (ask for the models first, convert pixels for the host,
`task.emit` its own events); whatever it raises becomes one `Failed` with a sentence from
`describe`, except a cancel the user asked for, which becomes `Stopped`.

Threads, not asyncio: hosts poll from their UI timers, so there is no async twin.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tether

__all__ = ["Done", "Failed", "Job", "Stopped", "Task", "UserError", "describe"]


class UserError(Exception):
    """A condition the user can fix (no document open, nothing selected, a server without
    the model a host needs): `describe` shows its message as it is, and a `Job` that ends
    with it prints no traceback."""


@dataclass(frozen=True)
class Done:
    """The work finished; `value` is what it returned (for a generation, the Result)."""

    value: Any


@dataclass(frozen=True)
class Failed:
    """The work failed. `message` is a sentence for the user (see `describe`); `code` is the
    gRPC status name ("UNAVAILABLE", ...), or "" for a failure on this side."""

    message: str
    code: str


@dataclass(frozen=True)
class Stopped:
    """The work stopped because `Job.cancel` was called."""


# One sentence per failure a user meets; `{at}` is " at HOST:PORT" when the address is
# known, `{where}` the place in the host where the address and token are set.
_SENTENCES: dict[type[tether.TetherError], str] = {
    tether.Unavailable: (
        "Cannot reach the Tether server{at}: check that it is running and that the address "
        "in {where} is right ({detail})"
    ),
    # The server's words for this one are about gRPC metadata: no help in a host.
    tether.Unauthenticated: "The Tether server{at} refused the token: set the right one in {where}",
    tether.PermissionDenied: "The Tether server{at} does not allow this: {detail}",
    # The server's message starts with the field it refuses ("steps: must be 1 to 150").
    tether.InvalidArgument: "The Tether server refused the request: {detail}",
    tether.NotFound: "The Tether server{at} does not have what the request names: {detail}",
    # A full queue ("...; retry in a moment") or a request over a size limit.
    tether.ResourceExhausted: "The Tether server{at} is busy or the request is too large: {detail}",
    tether.DeadlineExceeded: "The Tether server{at} did not answer in time ({detail})",
    # Only when the user did not cancel: the server dropped the job, e.g. to shut down.
    tether.Cancelled: "The Tether server{at} stopped the job ({detail})",
    tether.Internal: "The Tether server{at} failed: {detail}. Its log has the details.",
}


def describe(error: BaseException, address: str = "", *, where: str = "the settings") -> str:
    """A sentence for the user about `error`, raised while talking to the server at
    `address`: what went wrong and what to do. `where` names the place in the host where
    the address and token are set (e.g. "the add-on preferences")."""
    detail = str(error).strip()
    if isinstance(error, UserError):
        return detail
    if not isinstance(error, tether.TetherError):
        return f"Unexpected error: {type(error).__name__}: {detail}"
    at = f" at {address}" if address else ""
    sentence = _SENTENCES.get(type(error), "The Tether server{at} failed ({code}): {detail}")
    return sentence.format(at=at, where=where, detail=detail, code=error.code)


class Task:
    """The worker thread's side of a `Job`: what `work` may do."""

    def __init__(self, events: queue.SimpleQueue[Any]) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._cancelled = False
        self._stream: tether.Stream | None = None

    @property
    def cancelled(self) -> bool:
        """True once `Job.cancel` was called."""
        return self._cancelled

    def emit(self, event: Any) -> None:
        """Hand `event` to the UI thread: `Job.poll` returns it, in order."""
        self._events.put(event)

    def raise_if_cancelled(self) -> None:
        """Between steps of the work: stop here (as `Stopped`) if the user cancelled."""
        if self._cancelled:
            raise tether.Cancelled("cancelled")

    def generate(
        self,
        client: tether.Client,
        prompt: str,
        *,
        on_event: Callable[[Any], None] | None = None,
        **options: Any,
    ) -> tether.Result:
        """Stream one generation and return its Result. Every Queued and Progress event is
        emitted as it comes, or handed to `on_event` (on this thread) to emit something
        else, e.g. a preview converted for the host. `options` are those of
        `tether.Client.stream`. A cancel before the request is sent sends nothing; one
        while it runs stops the job on the server before its next step."""
        self.raise_if_cancelled()
        stream = client.stream(prompt, **options)
        # `cancel` may have run while the request was being built: it found no stream to
        # cancel then, so the flag is read again once the stream can be found.
        with self._lock:
            self._stream = stream
            cancelled = self._cancelled
        if cancelled:
            stream.cancel()
        try:
            return stream.result(on_event or self.emit)
        finally:
            with self._lock:
                self._stream = None

    def cancel(self) -> None:
        """What `Job.cancel` does (the work itself has no reason to call it)."""
        with self._lock:
            self._cancelled = True
            stream = self._stream
        if stream is not None:
            stream.cancel()


_END = object()  # what the worker queues after the last event


class Job:
    """Runs `work(task)` once, on a worker thread (`start`) or the calling one (`run`);
    the UI thread collects its events with `poll`. Every job ends in exactly one `Done`,
    `Failed` or `Stopped`. `describe` turns an exception into the Failed sentence."""

    def __init__(
        self,
        work: Callable[[Task], Any],
        *,
        describe: Callable[[BaseException], str] = describe,
        name: str = "tether-job",
    ) -> None:
        self._work = work
        self._describe = describe
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._task = Task(self._events)
        self._done = False
        # Daemon: a job waiting on the network must not keep the host from quitting.
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        """Run the work on a worker thread."""
        self._thread.start()

    def run(self) -> None:
        """Run the work on this thread, to the end; never raises."""
        try:
            outcome: Any = Done(self._work(self._task))
        except tether.Cancelled as error:
            if self._task.cancelled:
                outcome = Stopped()
            else:
                outcome = Failed(self._describe(error), error.code)
        except Exception as error:  # every failure must reach the user
            code = error.code if isinstance(error, tether.TetherError) else ""
            outcome = Failed(self._describe(error), code)
            if not isinstance(error, (tether.TetherError, UserError)):
                # A bug, not a condition: keep the traceback for the host's console/log.
                traceback.print_exc()
        self._events.put(outcome)
        self._events.put(_END)

    def cancel(self) -> None:
        """Stop the work: before the request is sent, nothing is sent; while the server
        runs it, the server stops before its next step. Safe from any thread."""
        self._task.cancel()

    @property
    def done(self) -> bool:
        """True once `poll` has returned the job's last event."""
        return self._done

    def poll(self) -> list[Any]:
        """The events that arrived since the last call, oldest first. Never blocks."""
        events: list[Any] = []
        while not self._done:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event is _END:
                self._done = True
            else:
                events.append(event)
        return events
