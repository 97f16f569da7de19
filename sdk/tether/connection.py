"""Channel settings shared by the sync and async clients: target, TLS, token, sizes."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"
# A 2048x2048 RGBA float32 buffer is 64 MiB; room for several units in one request.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# False: plaintext; True: TLS with the system's roots; a path: TLS trusting that PEM file.
TLS = bool | str | os.PathLike


def options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def credentials(tls: TLS) -> grpc.ChannelCredentials | None:
    if tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def is_loopback(host: str) -> bool:
    """True when a bare host (no port) names this machine: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a server, for every command that is a client of one:
    --server, --token (default $TETHER_TOKEN) and --tls [CA_PEM]."""
    parser.add_argument("--server", default=DEFAULT_TARGET, help="host:port of the Tether server")
    parser.add_argument(
        "--token",
        default=os.environ.get("TETHER_TOKEN"),
        help="bearer token for the Tether server (default: $TETHER_TOKEN)",
    )
    parser.add_argument(
        "--tls",
        nargs="?",
        const=True,
        default=False,
        metavar="CA_PEM",
        help="use TLS to the server; optionally trust this PEM root certificate",
    )
