"""The engine thread and its bounded queue.

RPC handlers (on the asyncio loop) submit tickets; one thread takes the oldest ticket plus
every waiting ticket with the same batch key (up to `max_batch`) and runs them through one
denoising loop. The asyncio loop never runs torch. Items reach the waiting handler through
`Ticket.post`, which is safe to call from the engine thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .engine import Engine, Job, Output
from .errors import ResourceExhausted

log = logging.getLogger("tether.worker")


@dataclass(frozen=True)
class Queued:
    position: int  # jobs ahead of this one


@dataclass(frozen=True)
class Done:
    output: Output | None  # None: cancelled
    queued_ms: float


@dataclass(frozen=True)
class Failed:
    error: BaseException


@dataclass
class Ticket:
    """A job waiting for or running on the engine, and the way back to its handler."""

    job: Job
    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)

    def post(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.items.put_nowait, item)


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int,
        max_batch: int,
        warm_up: Callable[[Engine], None] | None = None,
    ) -> None:
        self.engine = engine
        self.warm_up = warm_up
        self.ready = threading.Event()  # set once the warm-up ran
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._waiting: list[Ticket] = []
        self._condition = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tether-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch that is running, cancel the waiting jobs, end the thread."""
        with self._condition:
            self._stopping = True
            for ticket in self._waiting:
                ticket.post(Done(None, 0.0))
            self._waiting.clear()
            self._condition.notify()
        self._thread.join()

    def submit(self, ticket: Ticket) -> None:
        with self._condition:
            if len(self._waiting) >= self.max_queue:
                raise ResourceExhausted(
                    f"the queue is full ({self.max_queue} jobs waiting); retry in a moment"
                )
            self._waiting.append(ticket)
            ticket.post(Queued(len(self._waiting) - 1))
            self._condition.notify()

    def withdraw(self, ticket: Ticket) -> None:
        """Forget a ticket whose client went away, if it has not started."""
        with self._condition:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._announce_positions()

    def _run(self) -> None:
        # Warm up on this thread: torch's CPU thread pool belongs to the thread that uses
        # it, and running jobs on another thread than the warm-up measured 2x slower.
        if self.warm_up is not None:
            self.warm_up(self.engine)
        self.ready.set()
        while True:
            with self._condition:
                while not self._waiting and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                batch = self._take_batch()
                self._announce_positions()
            self._run_batch(batch)

    def _take_batch(self) -> list[Ticket]:
        first = self._waiting.pop(0)
        key = self.engine.batch_key(first.job)
        batch = [first]
        for ticket in list(self._waiting):
            if len(batch) == self.max_batch:
                break
            if self.engine.batch_key(ticket.job) == key:
                batch.append(ticket)
                self._waiting.remove(ticket)
        return batch

    def _announce_positions(self) -> None:
        for position, ticket in enumerate(self._waiting):
            ticket.post(Queued(position))

    def _run_batch(self, batch: list[Ticket]) -> None:
        started = time.perf_counter()
        try:
            outputs = self.engine.run([ticket.job for ticket in batch])
        except Exception as error:  # reported to every client of the batch, then serve on
            log.exception("batch of %d failed", len(batch))
            for ticket in batch:
                ticket.post(Failed(error))
            return
        for ticket, output in zip(batch, outputs):
            ticket.post(Done(output, (started - ticket.submitted) * 1000))
