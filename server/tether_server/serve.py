"""`tether serve`: the gRPC server process.

1. Listen at once, with health NOT_SERVING and Tether answering UNAVAILABLE.
2. Load the models (embedded tiny, or a TOML file) and warm them up on the engine thread.
3. Health SERVING: jobs flow.
4. On SIGTERM or Ctrl-C: health NOT_SERVING, stop taking calls, let running jobs finish
   (up to --drain-seconds), then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import signal
import sys

import grpc
import numpy as np
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tether import connection
from tether._proto.tether.v1 import tether_pb2, tether_pb2_grpc

from . import jobs
from . import models as model_sets
from .engine import MAX_CONTROLS, ControlInput, Engine, Job
from .errors import ModelConfigError
from .service import TetherService
from .worker import Worker

log = logging.getLogger("tether.serve")
SERVICE_NAME = tether_pb2.DESCRIPTOR.services_by_name["Tether"].full_name
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def check_arguments(args: argparse.Namespace) -> str | None:
    """A one-line reason the server must not start with these arguments, or None."""
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    if not connection.is_loopback(args.host) and not (args.token or args.tls_cert or args.insecure):
        return (
            f"refusing to listen on {args.host} without --token or --tls-cert/--tls-key: "
            "anyone on the network could use the GPU; pass --insecure to do it anyway"
        )
    for name in ("max_queue", "max_batch", "max_pixels", "max_canvas_pixels", "max_steps"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    return None


class TokenAuth(grpc.aio.ServerInterceptor):
    """Tether calls need `authorization: Bearer <token>`; health and reflection stay open
    so load balancers and tools can see the server."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        if not details.method.startswith(f"/{SERVICE_NAME}/"):
            return await continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(sent.encode(), self._expected):
            return await continuation(details)
        handler = await continuation(details)
        message = "missing or wrong token: send metadata 'authorization: Bearer <token>'"

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        if handler.response_streaming:

            async def deny_stream(request, context):
                await deny(request, context)
                yield  # makes this an async generator, as a streaming handler must be

            return grpc.unary_stream_rpc_method_handler(
                deny_stream, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            deny, handler.request_deserializer, handler.response_serializer
        )


def load_models(args: argparse.Namespace) -> model_sets.ModelSet:
    dtype = DTYPES[args.dtype] if args.dtype else None
    if args.models:
        return model_sets.load(args.models, device=args.device, dtype=dtype)
    device = args.device or model_sets.default_device()
    return model_sets.tiny().to(device, dtype or model_sets.default_dtype(device))


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


async def serve(args: argparse.Namespace) -> None:
    limits = tether_pb2.Limits(
        max_pixels=args.max_pixels,
        max_steps=args.max_steps,
        max_controls=MAX_CONTROLS,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_message_bytes=connection.MAX_MESSAGE_BYTES,
        max_canvas_pixels=args.max_canvas_pixels,
    )
    server = grpc.aio.server(
        interceptors=[TokenAuth(args.token)] if args.token else [],
        options=connection.options(),
    )
    service = TetherService(limits)
    tether_pb2_grpc.add_TetherServicer_to_server(service, server)
    health_service = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    reflection.enable_server_reflection(
        [
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = f"{args.host}:{args.port}"
    if args.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    for name in ("", SERVICE_NAME):
        await health_service.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info("listening on %s:%d, loading models", args.host, port)

    # 1. Models load and warm up off the event loop, which keeps answering health checks.
    models = await asyncio.to_thread(load_models, args)
    engine = Engine(
        models,
        max_pixels=args.max_pixels,
        max_canvas_pixels=args.max_canvas_pixels,
        max_steps=args.max_steps,
    )
    worker = Worker(engine, max_queue=args.max_queue, max_batch=args.max_batch, warm_up=warm_up)
    worker.start()
    await asyncio.to_thread(worker.ready.wait)
    service.ready(worker)
    for name in ("", SERVICE_NAME):
        await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(f"tether: serving {models.name} on {args.host}:{port}", file=sys.stderr, flush=True)

    # 2. Serve until SIGTERM / SIGINT, then drain.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("draining: finishing running jobs (up to %.0f s)", args.drain_seconds)
    await health_service.enter_graceful_shutdown()
    await server.stop(grace=args.drain_seconds)
    await asyncio.to_thread(worker.stop)
    print("tether: stopped", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    """Run the server with parsed `tether serve` arguments; returns the exit code."""
    problem = check_arguments(args)
    if problem:
        print(f"tether serve: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except ModelConfigError as error:
        print(f"tether serve: {error}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as error:  # grpc raises RuntimeError when a port is taken
        print(f"tether serve: {error}", file=sys.stderr)
        return 1
    return 0
