"""Channel settings shared by the sync and async clients: target, TLS, token, sizes, and
how calls spread over replicas.

A target is anything gRPC resolves: `host:port`, `dns:///tether.studio.svc:50051` (every
address the name has, e.g. a Kubernetes headless Service) or a list,
`ipv4:10.0.0.5:50051,10.0.0.6:50051`. Client channels balance calls round robin over the
addresses whose health service says SERVING, and retry a call refused UNAVAILABLE before
its first response (a replica that died or began draining meanwhile) on the next one.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import time
from pathlib import Path

import grpc

from ._proto.tether.v1 import tether_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
# A 2048x2048 RGBA float32 buffer is 64 MiB; room for several units in one request.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# False: plaintext; True: TLS with the system's roots; a path: TLS trusting that PEM file.
TLS = bool | str | os.PathLike


# gRPC's own retry policy (gRFC A6). gRPC commits a call at its first response and never
# retries it after that: only a call that no replica answered goes to another, so a job a
# replica has accepted (Queued) is never sent twice. Three retries, backoff capped at 0.1,
# 0.2 and 0.4 s (each a random fraction of that): enough to step past a replica or two that
# refuse, and an unreachable server is still reported within about a second. No retry
# throttling: the failures of calls that were running on a killed replica would use up its
# tokens and stop the retries of the calls that follow.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
TETHER_SERVICE = tether_pb2.DESCRIPTOR.services_by_name["Tether"].full_name
# Round robin over the replicas whose standard health service reports SERVING for the
# Tether service (client-side health checking, gRFC A17): a replica that is loading or
# draining gets no new calls. The retry policy covers the races: a replica that dies or
# starts draining between its last health report and a call. (A client of one server that
# is still loading is told "backend unhealthy" rather than the server's own words.)
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": TETHER_SERVICE},
    "methodConfig": [{"name": [{"service": TETHER_SERVICE}], "retryPolicy": RETRY_POLICY}],
}


def options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Message size limits, for servers and clients alike."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    """A client channel's options: size limits, round robin over healthy replicas, retries."""
    return [
        *options(max_message_bytes),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        # gRPC keeps a request until the call commits, to replay it to another replica; a
        # request larger than this buffer (256 KiB by default) would never be retried.
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
    ]


# A Generate that the server answered only with Queued events had not started. When it then
# ends UNAVAILABLE (its replica died, or drained before reaching it), the SDK sends it again,
# at most this many times: gRPC's own retries end at a call's first response, which is a
# Queued event.
GENERATE_RESENDS = 2


class Attempts:
    """Whether a Generate call that failed may be sent again (see GENERATE_RESENDS), and
    what is left of its timeout. Shared by the sync and async streams."""

    def __init__(self, timeout: float | None) -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._left = GENERATE_RESENDS
        self._started = False

    def timeout(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def seen(self, event: tether_pb2.GenerateEvent) -> None:
        if event.WhichOneof("event") != "queued":
            self._started = True

    def again(self, code: grpc.StatusCode) -> bool:
        """True (and one resend fewer left) when a call that ended with `code` may go again."""
        timeout = self.timeout()
        if self._started or not self._left or code != grpc.StatusCode.UNAVAILABLE:
            return False
        if timeout is not None and timeout <= 0:
            return False
        self._left -= 1
        return True


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
    parser.add_argument(
        "--server",
        default=DEFAULT_TARGET,
        help="the Tether server: host:port, or replicas as dns:///NAME:PORT or "
        "ipv4:IP:PORT,IP:PORT,... (calls go round robin)",
    )
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
