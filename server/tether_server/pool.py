"""The front's engine worker processes: started, watched, restarted, and handed calls.

The front (the gRPC server, `serve.py`) imports no torch. Each worker is a process
(`engine_process.py`) with its own models, engine thread and batching queue, on one
device; the front talks to all of them through one ZMQ ROUTER socket (`wire.py`).

1. Calls go to the ready worker with the fewest calls and live sessions. Request bytes
   are forwarded as the client sent them; events come back serialized, for the client.
2. The queue limit is the front's: a Generate holds one of `max_queue` places from its
   arrival until a batch takes it. Without a place the worker only checks the request
   (a request that can never run is told so, not to retry) and the call is refused
   RESOURCE_EXHAUSTED with the last batch's duration as the retry hint.
3. A worker that exits (segfault, SIGKILL, the OOM killer) is started again, after 0.5 s,
   then twice as long after each exit up to 30 s, back to 0.5 s once one has run a
   minute. Its running jobs end UNAVAILABLE (the job may be retried); its waiting jobs go
   to another ready worker or wait for one (at most MAX_DISPATCHES times, so a request
   that kills workers is not passed around for ever); its live sessions get a LiveError
   and go on on another worker with their config.
4. Health is SERVING while at least one worker is ready (`on_serving`); new calls are
   refused UNAVAILABLE while none is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import zmq
import zmq.asyncio
from tether._proto.tether.v1 import tether_pb2

from . import metrics, wire
from .errors import ResourceExhausted, TetherError, Unavailable

log = logging.getLogger("tether.pool")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a worker ready this long before it exits restarts after FIRST_BACKOFF_S
MAX_DISPATCHES = 3  # workers a waiting job may be sent to
FIRST_RETRY_MS = 1000  # the retry hint before any batch has been timed
STOP_TIMEOUT_S = 60.0  # for a worker to finish its running batch on SIGTERM
ENGINE_STOPPED = "the engine stopped while running this job ({why}); the job may be retried"
MOVED_TOO_OFTEN = (
    "the engine stopped {times} times while this job waited ({why}); the job may be retried"
)
NOT_STARTED = "no engine worker could start again ({why}); the job may be retried"
LIVE_STOPPED = "the engine stopped ({why}); the session goes on when an engine is ready"


@dataclass(frozen=True)
class Settings:
    """What `tether serve` tells its workers, and how many to start where."""

    devices: list[str] | None  # None: every GPU that torch sees, else the CPU
    workers: int | None  # None: one per device
    models: str | None  # a TOML file
    models_dir: str | None  # a ComfyUI or A1111 models folder
    max_loaded: int  # base models kept loaded per worker
    dtype: str | None
    max_queue: int
    max_batch: int
    max_pixels: int
    max_canvas_pixels: int
    max_steps: int


@dataclass(eq=False)
class Call:
    """A Generate or Preprocess call, from its arrival to its end."""

    id: int
    method: str  # wire.GENERATE or wire.PREPROCESS
    request: bytes
    request_id: str
    items: asyncio.Queue = field(default_factory=asyncio.Queue)  # (kind, bytes) or an error
    arrived: float = field(default_factory=time.perf_counter)
    holds_place: bool = False  # one of the queue's places, until a batch takes the job
    started: bool = False
    worker: EngineProcess | None = None
    dispatches: int = 0


class EngineProcess:
    """The front's view of one worker process (one start of it)."""

    def __init__(self, index: int, device: str, generation: int) -> None:
        self.index = index
        self.device = device
        self.routing_id = f"{index}.{generation}"
        self.process: asyncio.subprocess.Process | None = None
        self.dtype = ""
        self.listing = b""  # its ListModelsResponse
        self.ready_since: float | None = None
        self.failure: str | None = None  # why its models could not be loaded
        self.calls: set[Call] = set()
        self.links: set[LiveLink] = set()
        self.picked = 0.0  # when it was last given a call

    @property
    def ready(self) -> bool:
        return self.ready_since is not None

    @property
    def load(self) -> int:
        return len(self.calls) + len(self.links)


class LiveLink:
    """The pool's side of one live session: the worker that has it, the frame it is
    processing, and the config to replay if it moves to another worker."""

    def __init__(self, pool: WorkerPool, id: int, request_id: str, wake: asyncio.Event) -> None:
        self.pool = pool
        self.id = id
        self.request_id = request_id
        self.wake = wake  # set whenever there is something new for the session
        self.events: deque[bytes] = deque()  # LiveEvents for the client
        self.worker: EngineProcess | None = None
        self.frame_id: int | None = None  # sent to the worker, not answered yet
        self.good_config: bytes | None = None  # the last config the worker took
        self.configs: dict[int, bytes] = {}  # sent, not answered yet, by sequence number
        self._seq = itertools.count(1)

    @property
    def can_take_frame(self) -> bool:
        return self.worker is not None and self.frame_id is None

    def config(self, data: bytes) -> None:
        """Send a LiveRequest holding a config (kept until the worker answers it, and sent
        when the session finds a worker if it has none now)."""
        seq = next(self._seq)
        self.configs[seq] = data
        if self.worker is not None:
            self.pool.send(self.worker, wire.LIVE_CONFIG, {"call": self.id, "seq": seq}, data)

    def frame(self, data: bytes, frame_id: int, dropped: int, waited_ms: float) -> None:
        self.frame_id = frame_id
        header = {"call": self.id, "dropped": dropped, "waited_ms": waited_ms}
        self.pool.send(self.worker, wire.LIVE_FRAME, header, data)

    def attach(self, worker: EngineProcess) -> None:
        """Open the session on `worker` with the last good config and any unanswered."""
        self.worker = worker
        worker.links.add(self)
        self.pool.send(worker, wire.LIVE_OPEN, {"call": self.id, "request_id": self.request_id})
        replay = [self.good_config] if self.good_config is not None else []
        replay += self.configs.values()
        self.configs = {}
        for data in replay:
            self.config(data)
        self.wake.set()

    def handle(self, kind: str, header: dict, payload: list[zmq.Frame]) -> None:
        if kind == wire.EVENT:
            self.events.append(payload[0].bytes)
            if header["outcome"] != "config_error":
                self.frame_id = None
                metrics.LIVE_FRAMES.labels(header["outcome"]).inc()
        elif kind == wire.CONFIG:
            data = self.configs.pop(header["seq"])
            if header["ok"]:
                self.good_config = data
        elif kind == wire.ERROR:  # a bug in the worker while it processed the frame
            self._error(header["message"])
            metrics.LIVE_FRAMES.labels("error").inc()
        self.wake.set()

    def lost(self, why: str) -> None:
        """Its worker exited: the frame it had is lost; the session waits for another."""
        if self.frame_id is not None:
            metrics.LIVE_FRAMES.labels("lost").inc()
        self._error(LIVE_STOPPED.format(why=why))
        self.worker = None
        self.wake.set()

    def _error(self, message: str) -> None:
        error = tether_pb2.LiveError(frame_id=self.frame_id or 0, message=message)
        self.events.append(tether_pb2.LiveEvent(error=error).SerializeToString())
        self.frame_id = None


class WorkerPool:
    def __init__(self, settings: Settings, on_serving: Callable[[bool], Awaitable[None]]) -> None:
        self.settings = settings
        self.on_serving = on_serving
        self.workers: dict[int, EngineProcess] = {}  # by index: the current start of each
        self.waiting = 0  # Generate jobs holding a queue place
        self.batch_ms = FIRST_RETRY_MS  # how long the last batch ran
        self.serving = False
        self.ever_ready = asyncio.Event()
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._routes: dict[int, Call | LiveLink] = {}
        self._pending: deque[Call] = deque()  # waiting for a ready worker
        self._pending_links: list[LiveLink] = []
        self._ids = itertools.count(1)
        self._stopping = False
        self._tasks: list[asyncio.Task] = []

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._folder = tempfile.mkdtemp(prefix="tether-")
        self.address = f"ipc://{self._folder}/engine"
        self._context = zmq.asyncio.Context()
        self.socket = self._context.socket(zmq.ROUTER)
        wire.unlimited(self.socket)
        self.socket.bind(self.address)
        self._tasks.append(asyncio.create_task(self._receive()))
        # "auto": worker N takes GPU N (modulo the GPUs torch sees), or the CPU. Without
        # --workers, worker 0 says how many GPUs there are and the others follow.
        devices = self.settings.devices or ["auto"]
        for index in range(self.settings.workers or len(devices)):
            self._supervise(index, devices[index % len(devices)])

    async def stop(self) -> None:
        """Stop every worker: each finishes its running batch (SIGTERM), then exits."""
        self._stopping = True
        for task in self._tasks:  # no more restarts, nor messages to handle
            task.cancel()
        for worker in self.workers.values():
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
        self.socket.close()
        self._context.term()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _supervise(self, index: int, device: str) -> None:
        self._tasks.append(asyncio.create_task(self._keep_running(index, device)))

    async def _keep_running(self, index: int, device: str) -> None:
        backoff = FIRST_BACKOFF_S
        for generation in itertools.count():
            worker = EngineProcess(index, device, generation)
            self.workers[index] = worker
            await self._spawn(worker)
            status = await worker.process.wait()
            was_ready = worker.ready_since is not None
            ready_for = time.monotonic() - worker.ready_since if was_ready else 0.0
            why = _exit_reason(status)
            await self._lost(worker, why)
            if self._stopping:
                return
            if not self.ever_ready.is_set():  # the models cannot be loaded: give up
                failure = worker.failure or f"engine worker {index} exited ({why})"
                if not self.failed.done():
                    self.failed.set_result(failure)
                return
            if not was_ready and not self.serving:
                # It died starting again, and no other worker is ready: do not keep the
                # jobs waiting for one through the backoff, perhaps for ever.
                self._fail_pending(NOT_STARTED.format(why=why))
            if ready_for > STABLE_S:
                backoff = FIRST_BACKOFF_S
            log.warning("worker %d: restarting in %.1f s", index, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            metrics.WORKER_RESTARTS.inc()
            device = worker.device  # as resolved: "auto" is cuda:N or cpu

    async def _spawn(self, worker: EngineProcess) -> None:
        settings = self.settings
        command = [
            sys.executable,
            "-m",
            "tether_server.engine_process",
            f"--address={self.address}",
            f"--index={worker.index}",
            f"--routing-id={worker.routing_id}",
            f"--device={worker.device}",
            f"--max-queue={settings.max_queue}",
            f"--max-batch={settings.max_batch}",
            f"--max-pixels={settings.max_pixels}",
            f"--max-canvas-pixels={settings.max_canvas_pixels}",
            f"--max-steps={settings.max_steps}",
            f"--max-loaded={settings.max_loaded}",
        ]
        if settings.models:
            command.append(f"--models={settings.models}")
        if settings.models_dir:
            command.append(f"--models-dir={settings.models_dir}")
        if settings.dtype:
            command.append(f"--dtype={settings.dtype}")
        if worker.device in ("cpu", "auto"):
            threads = self._cpu_threads()
            if threads is not None:
                command.append(f"--threads={threads}")
        # stdin stays open and unused: the worker exits when it closes (the front is gone).
        worker.process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE
        )
        log.info("worker %d: started (pid %d)", worker.index, worker.process.pid)

    def _cpu_threads(self) -> int | None:
        """Torch threads of a CPU worker when several share the cores (each would take
        them all); None for torch's default."""
        devices = self.settings.devices or ["auto"]  # auto: the CPU on a machine without GPU
        count = self.settings.workers or len(devices)
        on_cpu = sum(devices[k % len(devices)] in ("cpu", "auto") for k in range(count))
        return max(1, (os.cpu_count() or 1) // on_cpu) if on_cpu > 1 else None

    async def _lost(self, worker: EngineProcess, why: str) -> None:
        """`worker` exited: end or move its calls and sessions."""
        worker.ready_since = None
        ended = moved = 0
        for call in list(worker.calls):
            call.worker = None
            if call.started or call.method == wire.PREPROCESS:
                message = ENGINE_STOPPED.format(why=why)
            elif call.dispatches >= MAX_DISPATCHES:
                message = MOVED_TOO_OFTEN.format(times=call.dispatches, why=why)
            else:
                message = None
            if message is not None:
                self._release(call)
                call.items.put_nowait(Unavailable(message))
                ended += 1
            else:
                self._dispatch(call)
                moved += 1
        worker.calls.clear()
        links = list(worker.links)
        worker.links.clear()
        for link in links:
            link.lost(why)
            self._attach(link)
        if not self._stopping:
            log.warning(
                "worker %d exited (%s): %d running job(s) ended, %d waiting job(s) moved, "
                "%d live session(s) moved",
                worker.index,
                why,
                ended,
                moved,
                len(links),
            )
        await self._readiness_changed()

    async def _readiness_changed(self) -> None:
        ready = [worker for worker in self.workers.values() if worker.ready]
        metrics.WORKERS_READY.set(len(ready))
        if bool(ready) != self.serving:
            self.serving = bool(ready)
            await self.on_serving(self.serving)
        while ready and self._pending:
            self._dispatch(self._pending.popleft())
        while ready and self._pending_links:
            self._attach(self._pending_links.pop(0))

    # -- messages --------------------------------------------------------------------------

    def send(self, worker: EngineProcess, kind: str, header: dict, *payload: bytes) -> None:
        """Send now: with no high-water mark, ZMQ queues what it cannot send at once."""
        frames = [worker.routing_id.encode(), *wire.pack(kind, header, *payload)]
        self.socket.send_multipart(frames, copy=False)

    async def _receive(self) -> None:
        by_routing_id = {}
        while True:
            frames = await self.socket.recv_multipart(copy=False)
            routing_id = frames[0].bytes.decode()
            kind, header, payload = wire.unpack(frames[1:])
            if routing_id not in by_routing_id:
                by_routing_id = {w.routing_id: w for w in self.workers.values()}
            worker = by_routing_id.get(routing_id)
            if worker is None or (worker.process and worker.process.returncode is not None):
                continue  # the last words of a worker that has exited
            try:
                await self._handle(worker, kind, header, payload)
            except Exception:  # one bad message must not stop every call's events
                log.exception("worker %d: message %r failed", worker.index, kind)

    async def _handle(
        self, worker: EngineProcess, kind: str, header: dict, payload: list[zmq.Frame]
    ) -> None:
        if kind == wire.HELLO:
            worker.device = header["device"]
            log.info("worker %d: pid %d on %s", worker.index, header["pid"], worker.device)
            settings = self.settings
            if settings.devices is None and settings.workers is None and len(self.workers) == 1:
                for index in range(1, len(header["devices"])):
                    self._supervise(index, "auto")
        elif kind == wire.READY:
            worker.ready_since = time.monotonic()
            worker.device, worker.dtype = header["device"], header["dtype"]
            worker.listing = payload[0].bytes
            log.info("worker %d: ready on %s", worker.index, worker.device)
            self.ever_ready.set()
            await self._readiness_changed()
        elif kind == wire.FAILED:
            worker.failure = header["error"]
        elif kind == wire.BATCH:
            self.batch_ms = header["batch_ms"]
            metrics.BATCH_SIZE.observe(len(header["queued_ms"]))
            for queued_ms in header["queued_ms"]:
                metrics.QUEUE_WAIT.observe(queued_ms / 1000)
            if header["step_ms"] is not None:
                metrics.STEP.observe(header["step_ms"] / 1000)
        else:
            route = self._routes.get(header["call"])
            if isinstance(route, LiveLink):
                route.handle(kind, header, payload)
            elif route is not None:
                self._handle_call(route, kind, header, payload)

    def _handle_call(self, call: Call, kind: str, header: dict, payload: list[zmq.Frame]) -> None:
        if kind == wire.STARTED:
            call.started = True
            self._release(call)
            return
        if kind == wire.EVENT:
            call.items.put_nowait((kind, payload[0].bytes))
            return
        # The call's last message from its worker.
        self._release(call)
        if call.worker is not None:
            call.worker.calls.discard(call)
        if kind == wire.ERROR:
            call.items.put_nowait(wire.error_from(header))
        else:  # DONE or VALID
            call.items.put_nowait((kind, payload[0].bytes if payload else b""))

    # -- calls -----------------------------------------------------------------------------

    async def generate(self, request: bytes, request_id: str) -> AsyncIterator[tuple[bytes, bool]]:
        """The GenerateEvents of one request, serialized, each with whether it is the last
        (the result); failures raised as TetherErrors. Leaving early stops the job at its
        next step, or takes it off its queue."""
        call = self._new_call(wire.GENERATE, request, request_id)
        if self.waiting < self.settings.max_queue:
            self._hold(call)
        try:
            self._dispatch(call)
            while True:
                item = await call.items.get()
                if isinstance(item, TetherError):
                    raise item
                kind, data = item
                if kind == wire.VALID:
                    raise ResourceExhausted(
                        f"the queue is full ({self.settings.max_queue} jobs waiting); "
                        "retry in a moment",
                        retry_after_ms=round(self.batch_ms),
                    )
                yield data, kind == wire.DONE
                if kind == wire.DONE:  # the result: nothing follows
                    return
        finally:
            self._forget(call)

    async def preprocess(self, request: bytes, request_id: str) -> bytes:
        call = self._new_call(wire.PREPROCESS, request, request_id)
        try:
            self._dispatch(call)
            item = await call.items.get()
            if isinstance(item, TetherError):
                raise item
            return item[1]
        finally:
            self._forget(call)

    @contextlib.asynccontextmanager
    async def live(self, request_id: str, wake: asyncio.Event) -> AsyncIterator[LiveLink]:
        self._check_ready()
        link = LiveLink(self, next(self._ids), request_id, wake)
        self._routes[link.id] = link
        self._attach(link)
        try:
            yield link
        finally:
            del self._routes[link.id]
            if link in self._pending_links:
                self._pending_links.remove(link)
            if link.worker is not None:
                link.worker.links.discard(link)
                self.send(link.worker, wire.CANCEL, {"call": link.id})

    def listing(self) -> bytes:
        """ListModelsResponse, from a ready worker (all load the same models)."""
        return self._ready_worker().listing

    def devices(self) -> tuple[str, str]:
        """(devices, dtype) of the ready workers, e.g. ("cuda:0,cuda:1", "float16")."""
        ready = [worker for worker in self.workers.values() if worker.ready]
        devices = ",".join(dict.fromkeys(worker.device for worker in ready))
        return devices, self._ready_worker().dtype

    def _ready_worker(self) -> EngineProcess:
        self._check_ready()
        return next(worker for worker in self.workers.values() if worker.ready)

    def _check_ready(self) -> None:
        if not self.ever_ready.is_set():
            raise Unavailable("the server is loading its models; retry when health is SERVING")
        if not self.serving:
            raise Unavailable(
                "no engine worker is ready (they are restarting); retry when health is SERVING"
            )

    def _new_call(self, method: str, request: bytes, request_id: str) -> Call:
        self._check_ready()
        call = Call(next(self._ids), method, request, request_id)
        self._routes[call.id] = call
        return call

    def _pick(self) -> EngineProcess | None:
        ready = [worker for worker in self.workers.values() if worker.ready]
        if not ready:
            return None
        worker = min(ready, key=lambda w: (w.load, w.picked))
        worker.picked = time.monotonic()
        return worker

    def _dispatch(self, call: Call) -> None:
        worker = self._pick()
        if worker is None:
            self._pending.append(call)
            return
        call.worker = worker
        call.dispatches += 1
        worker.calls.add(call)
        header = {"call": call.id, "request_id": call.request_id}
        if call.method == wire.GENERATE:
            header["admitted"] = call.holds_place
            header["waited_ms"] = (time.perf_counter() - call.arrived) * 1000
        self.send(worker, call.method, header, call.request)

    def _attach(self, link: LiveLink) -> None:
        worker = self._pick()
        if worker is None:
            self._pending_links.append(link)
        else:
            link.attach(worker)

    def _forget(self, call: Call) -> None:
        """The call ended (or its client left): free what it holds, stop it on its worker."""
        del self._routes[call.id]
        if call in self._pending:
            self._pending.remove(call)
        self._release(call)
        if call.worker is not None and call in call.worker.calls:
            call.worker.calls.discard(call)
            self.send(call.worker, wire.CANCEL, {"call": call.id})

    def _fail_pending(self, message: str) -> None:
        while self._pending:
            call = self._pending.popleft()
            self._release(call)
            call.items.put_nowait(Unavailable(message))

    def _hold(self, call: Call) -> None:
        call.holds_place = True
        self.waiting += 1
        metrics.QUEUE_DEPTH.set(self.waiting)

    def _release(self, call: Call) -> None:
        if call.holds_place:
            call.holds_place = False
            self.waiting -= 1
            metrics.QUEUE_DEPTH.set(self.waiting)


def _exit_reason(status: int) -> str:
    """A process's return code in words: "SIGKILL", "exit status 1"."""
    if status < 0:
        return signal.Signals(-status).name
    return f"exit status {status}"
