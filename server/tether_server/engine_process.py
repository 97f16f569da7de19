"""An engine worker process: the models, the engine thread, and the front's calls over ZMQ.

`tether serve` (the front, `pool.py`) starts one per device as
`python -m tether_server.engine_process --address ipc://... --index N --device ...`:
1. Import torch, resolve the device, say hello (the front learns the GPUs torch sees).
2. Build the engine (`build_engine`) and warm it up on the engine thread; say ready with
   the models' listing.
3. Serve the front's calls (`wire.py`) on an asyncio loop: a request is parsed, checked and
   made into a job here (`jobs.py`), run by `Worker.run`, and its events go back as
   serialized GenerateEvent / LiveEvent bytes that the front forwards as they are.
4. SIGTERM: finish the running batch and exit. SIGINT is the front's to act on (a Ctrl-C
   in a terminal reaches the whole process group). The front holds this process's stdin
   open: end of file means the front is gone, and the worker exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine

import numpy as np
import torch
import zmq
import zmq.asyncio
from google.protobuf.message import DecodeError, Message
from tether import connection
from tether._proto.tether.v1 import tether_pb2

from . import catalog as catalogs
from . import images, jobs, request_ids, schedulers, wire
from . import models as model_sets
from .engine import MAX_CONTROLS, ControlInput, Engine, Job
from .errors import Internal, ModelConfigError, TetherError, invalid
from .live_frames import LiveFrames
from .registry import ModelRegistry
from .worker import BatchReport, Done, Queued, Started, Worker

log = logging.getLogger("tether.engine")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Why models cannot be loaded, told in one line: a bad model file or folder, a missing
# file, a device torch does not have.
STARTUP_ERRORS = (ModelConfigError, OSError, RuntimeError)


def build_engine(args: argparse.Namespace) -> Engine:
    """The one place a worker makes its engine from the serve options: the models (the
    embedded tiny set, or the catalog of --models and --models-dir with its default model
    loaded) on this worker's device, and the request limits."""
    dtype = DTYPES[args.dtype] if args.dtype else model_sets.default_dtype(args.device)
    if args.models is None and args.models_dir is None:
        registry = ModelRegistry.of(model_sets.tiny().to(args.device, dtype))
    else:
        catalog = catalogs.read(args.models, args.models_dir)
        registry = ModelRegistry(
            catalog, device=args.device, dtype=dtype, max_loaded=args.max_loaded
        )
        try:
            registry.load(registry.default)
        except Internal as error:  # what a client would be told; the worker says why
            raise error.__cause__ from None
    return Engine(
        registry,
        max_pixels=args.max_pixels,
        max_canvas_pixels=args.max_canvas_pixels,
        max_steps=args.max_steps,
    )


def warm_up(engine: Engine) -> None:
    """One small job through every control model, so the first client does not pay for
    lazy initialisation (kernels, allocator)."""
    size = 64
    blank = np.zeros((size, size, 3), dtype=np.float32)
    controls = [ControlInput(name, blank) for name in engine.models.controls]
    job = Job(
        prompt="",
        steps=2,
        guidance_scale=jobs.GENERATE.guidance_scale,
        width=size,
        height=size,
        controls=controls,
    )
    engine.run([job])


def listing(engine: Engine, args: argparse.Namespace) -> tether_pb2.ListModelsResponse:
    """ListModels' answer, which the front serves for every worker: every model of the
    catalog, loaded or not."""
    catalog = engine.registry.catalog
    limits = tether_pb2.Limits(
        max_pixels=args.max_pixels,
        max_canvas_pixels=args.max_canvas_pixels,
        max_steps=args.max_steps,
        max_controls=MAX_CONTROLS,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_message_bytes=connection.MAX_MESSAGE_BYTES,
    )
    return tether_pb2.ListModelsResponse(
        models=[
            tether_pb2.BaseModel(
                name=m.name,
                family=m.family,
                default_width=m.default_size,
                default_height=m.default_size,
            )
            for m in catalog.models.values()
        ],
        controls=[
            tether_pb2.ControlModel(name=c.name, kind=c.kind) for c in catalog.controls.values()
        ],
        schedulers=list(schedulers.SCHEDULERS),
        limits=limits,
        loras=[tether_pb2.LoraModel(name=name) for name in catalog.loras],
        embeddings=[tether_pb2.Embedding(name=name) for name in catalog.embeddings],
    )


class _NotAdmitted(Exception):
    """The front has no queue place for this request: it passed every check before
    decoding, which is all it asked."""


class EngineHost:
    """The front's calls on this worker: one task per Generate, Preprocess or live frame."""

    def __init__(self, socket: zmq.asyncio.Socket, worker: Worker) -> None:
        self.socket = socket
        self.worker = worker
        self.tasks: dict[int, asyncio.Task] = {}
        self.live: dict[int, LiveFrames] = {}

    async def serve(self) -> None:
        while True:
            await self._handle(*wire.unpack(await self.socket.recv_multipart(copy=False)))

    async def _handle(self, kind: str, header: dict, payload: list[zmq.Frame]) -> None:
        call = header["call"]
        if kind == wire.GENERATE:
            self._start(call, header, self._generate(call, header, payload[0]))
        elif kind == wire.PREPROCESS:
            self._start(call, header, self._preprocess(call, payload[0]))
        elif kind == wire.LIVE_OPEN:
            self.live[call] = LiveFrames(self.worker, header["request_id"])
        elif kind == wire.LIVE_CONFIG:
            await self._configure(call, header["seq"], payload[0])
        elif kind == wire.LIVE_FRAME:
            session = self.live[call]  # the front opens a session before its frames
            header["request_id"] = session.request_id
            self._start(call, header, self._frame(call, session, header, payload[0]))
        elif kind == wire.CANCEL:
            self.live.pop(call, None)
            task = self.tasks.pop(call, None)
            if task is not None:
                task.cancel()  # Worker.run stops the job before its next step

    async def send(self, kind: str, header: dict, *payload: bytes) -> None:
        await self.socket.send_multipart(wire.pack(kind, header, *payload), copy=False)

    def _start(self, call: int, header: dict, work: Coroutine) -> None:
        async def run() -> None:
            request_ids.current.set(header["request_id"])
            try:
                await work
            except TetherError as error:
                await self.send(wire.ERROR, wire.error_header(call, error))
            except Exception as error:  # a bug: INTERNAL, never UNKNOWN
                log.exception("a call failed")
                failed = Internal(f"the server failed: {type(error).__name__}: {error}")
                await self.send(wire.ERROR, wire.error_header(call, failed))
            finally:
                if self.tasks.get(call) is task:
                    del self.tasks[call]

        task = asyncio.create_task(run())
        self.tasks[call] = task

    async def _generate(self, call: int, header: dict, data: zmq.Frame) -> None:
        received = time.perf_counter()
        admitted = header["admitted"]

        def check_room() -> None:
            if not admitted:
                raise _NotAdmitted
            self.worker.check_room()  # live frames share this worker's queue

        def job_of(data: zmq.Frame) -> tuple[Job, int, int]:
            """The job and the request's output and preview formats: only the job (its
            maps) is kept while it waits and runs, not the request."""
            request = _parsed(tether_pb2.GenerateRequest, data)
            job = jobs.generate_job(request, self.worker.engine, check_room)
            return job, request.output_format, request.preview.format

        try:
            job, output_format, preview_format = await asyncio.to_thread(job_of, data)
        except _NotAdmitted:
            await self.send(wire.VALID, {"call": call})
            return
        del data  # ZMQ's buffer of the request
        progress = functools.partial(_progress_event, preview_format)
        async with contextlib.aclosing(self.worker.run(job, progress)) as events:
            async for item in events:
                if isinstance(item, Queued):
                    queued = tether_pb2.GenerateEvent(queued={"position": item.position})
                    await self.send(wire.EVENT, {"call": call}, queued.SerializeToString())
                elif isinstance(item, Started):
                    await self.send(wire.STARTED, {"call": call})
                elif isinstance(item, Done):
                    total_ms = header["waited_ms"] + (time.perf_counter() - received) * 1000
                    result = await asyncio.to_thread(_result_event, item, output_format, total_ms)
                    await self.send(wire.DONE, {"call": call}, result)
                else:  # a progress event, serialized on the engine thread
                    await self.send(wire.EVENT, {"call": call}, item)

    async def _preprocess(self, call: int, data: zmq.Frame) -> None:
        def answer() -> bytes:
            request = _parsed(tether_pb2.PreprocessRequest, data)
            control_map = jobs.preprocess_map(request, self.worker.engine)
            response = tether_pb2.PreprocessResponse()
            images.encode(control_map, request.format, response.image)
            return response.SerializeToString()

        await self.send(wire.DONE, {"call": call}, await asyncio.to_thread(answer))

    async def _configure(self, call: int, seq: int, data: zmq.Frame) -> None:
        session = self.live.get(call)
        if session is None:  # closed meanwhile
            return
        error = session.configure(tether_pb2.LiveRequest.FromString(data.buffer).config)
        if error is not None:
            header = {"call": call, "outcome": "config_error"}
            await self.send(wire.EVENT, header, error.SerializeToString())
        await self.send(wire.CONFIG, {"call": call, "seq": seq, "ok": error is None})

    async def _frame(self, call: int, session: LiveFrames, header: dict, data: zmq.Frame) -> None:
        request = await asyncio.to_thread(tether_pb2.LiveRequest.FromString, data.buffer)
        event, outcome = await session.process(
            request.frame, header["dropped"], header["waited_ms"]
        )
        await self.send(wire.EVENT, {"call": call, "outcome": outcome}, event.SerializeToString())


def _parsed(message: type[Message], data: zmq.Frame) -> Message:
    """The client's request, parsed straight from ZMQ's buffer."""
    try:
        return message.FromString(data.buffer)
    except DecodeError:
        raise invalid("request", f"is not a {message.DESCRIPTOR.full_name} message") from None


def _progress_event(
    preview_format: int, step: int, total: int, preview: np.ndarray | None
) -> bytes:
    """A step's event, made on the engine thread (`Worker.run`): previews are encoded there,
    not on the event loop."""
    event = tether_pb2.GenerateEvent()
    event.progress.step = step
    event.progress.total = total
    if preview is not None:
        images.encode(preview, preview_format, event.progress.preview)
    return event.SerializeToString()


def _result_event(done: Done, output_format: int, total_ms: float) -> bytes:
    output = done.output
    event = tether_pb2.GenerateEvent()
    result = event.result
    images.encode(output.image, output_format, result.image)
    result.seed = output.seed
    result.timings.queued_ms = done.queued_ms
    result.timings.prepare_ms = output.prepare_ms
    result.timings.denoise_ms = output.denoise_ms
    result.timings.decode_ms = output.decode_ms
    result.timings.batch_size = output.batch_size
    result.timings.total_ms = total_ms
    return event.SerializeToString()


async def run(args: argparse.Namespace) -> None:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.DEALER)
    wire.unlimited(socket)
    socket.setsockopt(zmq.ROUTING_ID, args.routing_id.encode())
    socket.connect(args.address)
    loop = asyncio.get_running_loop()

    # 1. Hello: the device, and the GPUs torch sees (the front's default is one per GPU).
    devices = [f"cuda:{k}" for k in range(torch.cuda.device_count())] or ["cpu"]
    if args.device == "auto":
        args.device = devices[args.index % len(devices)]
    if args.threads:
        torch.set_num_threads(args.threads)
    hello = {"pid": os.getpid(), "device": args.device, "devices": devices}
    await socket.send_multipart(wire.pack(wire.HELLO, hello))

    # 2. The engine, warmed up on its thread.
    try:
        engine = await asyncio.to_thread(build_engine, args)
    except STARTUP_ERRORS as error:  # the front prints it and stops
        await socket.send_multipart(wire.pack(wire.FAILED, {"error": str(error)}))
        raise

    def report_batch(report: BatchReport) -> None:  # on the engine thread
        batch = wire.pack(wire.BATCH, dataclasses.asdict(report))
        loop.call_soon_threadsafe(socket.send_multipart, batch)

    worker = Worker(
        engine,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        warm_up=warm_up,
        on_batch=report_batch,
    )
    worker.start()
    await asyncio.to_thread(worker.ready.wait)
    models = engine.models
    ready = {"device": str(models.device), "dtype": str(models.dtype).removeprefix("torch.")}
    await socket.send_multipart(
        wire.pack(wire.READY, ready, listing(engine, args).SerializeToString())
    )
    log.info("ready: %s on %s", models.name, models.device)

    # 3. The front's calls, until SIGTERM; then the running batch finishes.
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    serving = asyncio.create_task(EngineHost(socket, worker).serve())
    await stop.wait()
    serving.cancel()
    await asyncio.to_thread(worker.stop)
    socket.close()
    context.term()


def _exit_when_the_front_is_gone() -> None:
    # The file descriptor itself: sys.stdin's buffer holds a lock that would stop this
    # process at exit while this thread waits.
    while os.read(sys.stdin.fileno(), 4096):
        pass  # end of file: the front closed it, or died
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="the front's ZMQ address")
    parser.add_argument("--index", type=int, required=True, help="this worker's number")
    parser.add_argument("--routing-id", required=True, help="ZMQ routing id, unique per start")
    parser.add_argument(
        "--device", required=True, help="torch device; auto: GPU --index (modulo), else cpu"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--models", help="TOML file of models")
    parser.add_argument("--models-dir", help="ComfyUI or A1111 models folder")
    parser.add_argument("--max-loaded", type=int, default=1, help="base models kept loaded")
    parser.add_argument("--dtype", choices=sorted(DTYPES))
    for name in (
        "--max-queue",
        "--max-batch",
        "--max-pixels",
        "--max-canvas-pixels",
        "--max-steps",
    ):
        parser.add_argument(name, type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_the_front_is_gone, daemon=True).start()
    request_ids.configure_logging(f"worker{args.index}")
    try:
        asyncio.run(run(args))
    except STARTUP_ERRORS:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
