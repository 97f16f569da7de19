"""`tether bridge` (and `python -m tether.bridge`): its options, the door rule, and running
it until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from .. import connection
from .server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HOST_PATH,
    MAX_MESSAGE_BYTES,
    serve,
    websockets_server,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tether bridge`."""
    connection.add_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    parser.add_argument(
        "--bridge-token",
        default=os.environ.get("TETHER_BRIDGE_TOKEN"),
        help="token hosts and viewers must present (header 'Authorization: Bearer TOKEN' or "
        "?token=TOKEN); needed to listen beyond loopback (default: $TETHER_BRIDGE_TOKEN)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without --bridge-token (refused otherwise)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser pages from this origin connect (e.g. http://localhost:8060 for a "
        "Godot web export; * for any); the bridge's own page always may",
    )
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=MAX_MESSAGE_BYTES / 2**20,
        help="largest frame message in MiB",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    """A one-line reason the bridge must not start with these arguments, or None. The
    server's door rule: beyond loopback, nobody gets in without a token unless asked."""
    if not connection.is_loopback(args.host) and not (args.bridge_token or args.insecure):
        return (
            f"refusing to listen on {args.host} without --bridge-token: anyone on the network "
            "could use the Tether server through the bridge; pass --insecure to do it anyway"
        )
    return None


def main(args: argparse.Namespace) -> int:
    """Run `tether bridge` until interrupted; 0 on a clean stop."""
    problem = check_arguments(args)
    if problem is None:
        try:
            websockets_server()
        except ImportError as error:
            problem = str(error)
    if problem is not None:
        print(f"tether bridge: {problem}", file=sys.stderr)
        return 2

    def ready(port: int) -> None:
        base = f"{args.host}:{port}"
        token = " with the bridge token" if args.bridge_token else ""
        print(
            f"tether bridge: hosts connect to ws://{base}{HOST_PATH}{token}, viewer at "
            f"http://{base}/{'?token=...' if args.bridge_token else ''} (server {args.server})",
            flush=True,
        )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
                loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        await serve(
            args.server,
            token=args.token,
            tls=args.tls,
            host=args.host,
            port=args.port,
            bridge_token=args.bridge_token,
            allowed_origins=args.allow_origin,
            max_message_bytes=int(args.max_message_mb * 2**20),
            ready=ready,
            stop=stop,
        )

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as error:  # e.g. the port is taken
        print(f"tether bridge: {error}", file=sys.stderr)
        return 1
    return 0
