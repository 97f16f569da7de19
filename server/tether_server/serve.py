"""`tether serve`: the gRPC front and its engine worker processes.

1. Read and check the models file and folder (`catalog`): a bad one is one line and exit
   status 2, before any port is bound.
2. Listen, with health NOT_SERVING and Tether answering UNAVAILABLE; serve Prometheus
   metrics if asked (`--metrics-port`).
3. Start the engine workers (`pool.py`): one process per device, each loading the default
   model (the others load on first use) and warming it up. Health is SERVING while at
   least one is ready.
4. On SIGTERM or Ctrl-C: health NOT_SERVING, stop taking calls, let running jobs finish
   (up to --drain-seconds), then stop the workers and exit.

This process imports no torch: the engine runs in the workers only.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tether import connection
from tether._proto.tether.v1 import tether_pb2

from . import catalog as catalogs
from . import metrics, request_ids
from .errors import ModelConfigError
from .pool import Settings, WorkerPool
from .service import SERVICE, TetherService

log = logging.getLogger("tether.serve")
SERVICE_NAME = SERVICE.full_name
DTYPES = ("float16", "bfloat16", "float32")


def check_arguments(args: argparse.Namespace) -> str | None:
    """A one-line reason the server must not start with these arguments, or None."""
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    if not connection.is_loopback(args.host) and not (args.token or args.tls_cert or args.insecure):
        return (
            f"refusing to listen on {args.host} without --token or --tls-cert/--tls-key: "
            "anyone on the network could use the GPU; pass --insecure to do it anyway"
        )
    numbers = (
        "max_queue",
        "max_batch",
        "max_pixels",
        "max_canvas_pixels",
        "max_steps",
        "max_loaded",
        "workers",
    )
    for name in numbers:
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if args.devices is not None and not all(args.devices.split(",")):
        return f"--devices: a comma-separated list of torch devices (got {args.devices!r})"
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        return f"--metrics-port must be 0 to 65535 (got {args.metrics_port})"
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


def read_catalog(args: argparse.Namespace) -> None:
    """Check the models of --models and --models-dir (ModelConfigError if they cannot be
    served) before anything starts; the workers read them again, as plain data."""
    if args.models is None and args.models_dir is None:
        return
    for line in catalogs.read(args.models, args.models_dir).left_out:
        log.warning("left out %s", line)


def settings(args: argparse.Namespace) -> Settings:
    return Settings(
        devices=args.devices.split(",") if args.devices else None,
        workers=args.workers,
        models=str(args.models) if args.models else None,
        models_dir=str(args.models_dir) if args.models_dir else None,
        max_loaded=args.max_loaded,
        dtype=args.dtype,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_pixels=args.max_pixels,
        max_canvas_pixels=args.max_canvas_pixels,
        max_steps=args.max_steps,
    )


async def serve(args: argparse.Namespace) -> str | None:
    """Serve until SIGTERM or SIGINT; returns why the server could not start, or None."""
    server = grpc.aio.server(
        interceptors=[TokenAuth(args.token)] if args.token else [],
        options=connection.options(),
    )
    health_service = health.aio.HealthServicer()

    async def set_health(serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await health_service.set(name, status)

    pool = WorkerPool(settings(args), on_serving=set_health)
    server.add_generic_rpc_handlers((TetherService(pool).handler(),))
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
    await set_health(False)
    await server.start()
    log.info("listening on %s:%d, starting the engine workers", args.host, port)
    if args.metrics_port is not None:
        metrics_port = metrics.serve(args.host, args.metrics_port)
        print(
            f"tether: metrics on http://{args.host}:{metrics_port}/metrics",
            file=sys.stderr,
            flush=True,
        )

    # 1. The workers load and warm up their models; the event loop answers health checks.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await pool.start()
    ready = asyncio.create_task(pool.ever_ready.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([ready, stopped, pool.failed], return_when=asyncio.FIRST_COMPLETED)
    if pool.failed.done():
        await server.stop(None)
        await pool.stop()
        return pool.failed.result()
    if ready.done():
        listing = tether_pb2.ListModelsResponse.FromString(pool.listing())
        names = ", ".join(model.name for model in listing.models)
        print(f"tether: serving {names} on {args.host}:{port}", file=sys.stderr, flush=True)

    # 2. Serve until SIGTERM / SIGINT, then drain.
    await stopped
    ready.cancel()
    log.info("draining: finishing running jobs (up to %.0f s)", args.drain_seconds)
    await health_service.enter_graceful_shutdown()
    await server.stop(grace=args.drain_seconds)
    await pool.stop()
    print("tether: stopped", file=sys.stderr, flush=True)
    return None


def main(args: argparse.Namespace) -> int:
    """Run the server with parsed `tether serve` arguments; returns the exit code."""
    problem = check_arguments(args)
    if problem:
        print(f"tether serve: {problem}", file=sys.stderr)
        return 2
    request_ids.configure_logging("front")
    try:
        read_catalog(args)
        failure = asyncio.run(serve(args))
    except ModelConfigError as error:
        print(f"tether serve: {error}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as error:  # grpc raises RuntimeError when a port is taken
        print(f"tether serve: {error}", file=sys.stderr)
        return 1
    if failure is not None:  # no worker could load the models: the options cannot be served
        print(f"tether serve: {failure}", file=sys.stderr)
        return 2
    return 0
