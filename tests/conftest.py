"""Shared fixtures: the tiny model set, and real servers on real ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# No model hub here: a path that is not a local folder must fail at once, not after retries.
os.environ["HF_HUB_OFFLINE"] = "1"

import grpc  # noqa: E402
import pytest  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `tether serve` subprocess on a free port, and its engine worker processes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"tether-server-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env={**os.environ, **(env or {})},
        )

    def wait_serving(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server not serving after {timeout} s: {self.log.read_text()[-2000:]}")

    def workers(self) -> list[int]:
        """Pids of the engine worker processes: the front's children."""
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        return pids

    def pids(self) -> list[int]:
        """The front and its engine workers."""
        return [self.process.pid, *self.workers()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """Address of a session-wide server on the embedded tiny model."""
    running = Server().wait_serving()
    yield running.address
    running.stop()


@pytest.fixture(scope="session")
def tiny_models():
    from tether_server import models

    return models.tiny()


@pytest.fixture(scope="session")
def seeing_models():
    """The tiny model set with ControlNets whose maps matter. A fresh ControlNet's
    conditioning embedding ends in a zero convolution (so that training starts from the
    base model), which makes the map change nothing; here its convolutions get random
    weights that carry the map through (He's initialisation)."""
    import torch
    from tether_server import models

    tiny = models.tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for control in tiny.controls.values():
            for layer in control.model.controlnet_cond_embedding.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(layer.weight)
    return tiny
