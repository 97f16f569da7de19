"""The engine thread, its bounded queue, and `Worker.run`, the one way a job runs.

Inside an engine worker process (`engine_process`), the handlers of the front's calls (on
the process's asyncio loop) call `run(job)`: it puts a ticket in the queue and yields what
happens to the job. One thread takes the oldest ticket plus every waiting ticket with the
same batch key (up to `max_batch`) and runs them through one denoising loop; the asyncio
loop never runs torch. Items reach the waiting handler through `Ticket.post`, which is
safe to call from the engine thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import request_ids, tiles
from .engine import Engine, Job, Output
from .errors import Cancelled, Internal, ResourceExhausted, TetherError

log = logging.getLogger("tether.worker")

# `run`'s retry hint before any batch has been timed.
_FIRST_RETRY_MS = 1000


@dataclass(frozen=True)
class Queued:
    position: int  # jobs ahead of this one


@dataclass(frozen=True)
class Started:
    """A batch took the job: it left the queue."""


@dataclass(frozen=True)
class Done:
    output: Output
    queued_ms: float


@dataclass(frozen=True)
class BatchReport:
    """What a batch tells the metrics."""

    queued_ms: list[float]  # how long each of its jobs waited in the queue
    batch_ms: float  # how long it ran
    step_ms: float | None  # its mean denoising step time; None if every job failed or left


@dataclass(frozen=True)
class _Failed:
    error: TetherError


@dataclass
class Ticket:
    """A job waiting for or running on the engine, and the way back to its handler."""

    job: Job | tiles.Canvas
    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=request_ids.current.get)

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
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.engine = engine
        self.warm_up = warm_up
        # Called on the engine thread after each batch.
        self.on_batch = on_batch
        self.ready = threading.Event()  # set once the warm-up ran
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._waiting: list[Ticket] = []
        self._condition = threading.Condition()
        self._stopping = False
        self._batch_ms = float(_FIRST_RETRY_MS)  # how long the last batch ran
        self._thread = threading.Thread(target=self._run, name="tether-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch that is running, cancel the waiting jobs, end the thread."""
        with self._condition:
            self._stopping = True
            for ticket in self._waiting:
                ticket.post(_Failed(Cancelled("the server is stopping; the job did not start")))
            self._waiting.clear()
            self._condition.notify()
        self._thread.join()

    def check_room(self) -> None:
        """ResourceExhausted, with a retry hint, if the queue is full: lets a request be
        refused before its images are decoded."""
        with self._condition:
            if len(self._waiting) >= self.max_queue:
                raise self._queue_full()

    async def run(
        self,
        job: Job | tiles.Canvas,
        progress: Callable[[int, int, np.ndarray | None], Any] | None = None,
    ) -> AsyncIterator[Queued | Started | Done | Any]:
        """Run `job` (checked by `engine.check`) and yield what happens to it, in order:
        Queued(position) while it waits, Started when a batch takes it, `progress(step,
        total, preview)`'s value after each step, and last Done. `progress` runs on the
        engine thread, so that previews are encoded there and not on the event loop.

        Failures are raised already worded for the status table: a full queue and running
        out of memory as ResourceExhausted, a cancelled job as Cancelled, any other engine
        failure as Internal. Leaving early (the client went away) stops the job before its
        next step, or takes it off the queue if it has not started.
        """
        ticket = Ticket(job, asyncio.get_running_loop())
        if progress is not None:
            job.on_progress = lambda step, total, preview: ticket.post(
                progress(step, total, preview)
            )
        with self._condition:  # a reentrant lock: check_room takes it again
            self.check_room()
            self._waiting.append(ticket)
            ticket.post(Queued(len(self._waiting) - 1))
            self._condition.notify()
        try:
            while True:
                item = await ticket.items.get()
                if isinstance(item, _Failed):
                    raise item.error
                yield item
                if isinstance(item, Done):
                    return
        finally:
            job.cancel.set()
            with self._condition:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    self._announce_positions()

    def _queue_full(self) -> ResourceExhausted:
        # Places free up when the running batch ends; the last batch's time estimates when.
        return ResourceExhausted(
            f"the queue is full ({self.max_queue} jobs waiting); retry in a moment",
            retry_after_ms=round(self._batch_ms),
        )

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
        key = tiles.batch_key(self.engine, first.job)
        batch = [first]
        for ticket in list(self._waiting):
            if len(batch) == self.max_batch:
                break
            if tiles.batch_key(self.engine, ticket.job) == key:
                batch.append(ticket)
                self._waiting.remove(ticket)
        return batch

    def _announce_positions(self) -> None:
        for position, ticket in enumerate(self._waiting):
            ticket.post(Queued(position))

    def _run_batch(self, batch: list[Ticket]) -> None:
        started = time.perf_counter()
        queued_ms = [(started - ticket.submitted) * 1000 for ticket in batch]
        for ticket in batch:
            ticket.post(Started())
        outputs: list[Output | None] = []
        try:
            outputs = tiles.run(self.engine, [ticket.job for ticket in batch], self.max_batch)
        except Exception as error:  # reported to every client of the batch, then serve on
            ids = ", ".join(ticket.request_id for ticket in batch)
            log.exception("batch of %d failed", len(batch), extra={"request_id": ids})
            for ticket in batch:
                ticket.post(_Failed(_worded(error)))
        finally:
            self._batch_ms = (time.perf_counter() - started) * 1000
        for ticket, output, waited in zip(batch, outputs, queued_ms):
            if output is None:
                ticket.post(_Failed(Cancelled("the job was cancelled")))
            else:
                ticket.post(Done(output, waited))
        if self.on_batch is not None:
            finished = [output for output in outputs if output is not None]
            step_ms = finished[0].denoise_ms / finished[0].steps if finished else None
            self.on_batch(BatchReport(queued_ms, self._batch_ms, step_ms))


def _worded(error: Exception) -> TetherError:
    """An engine failure as the client is told it: the same words in Generate and Live."""
    if isinstance(error, TetherError):
        return error
    if isinstance(error, torch.OutOfMemoryError):
        return ResourceExhausted("out of GPU memory; try a smaller size")
    return Internal(f"the engine failed: {type(error).__name__}: {error}")
