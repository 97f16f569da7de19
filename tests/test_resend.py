"""A Generate whose server goes away before the job starts is sent again by the SDK (sync
and async alike); one that had started is not: its progress would be lost silently.

gRPC's own retry policy (tether.connection) ends at a call's first response, and a server
answers Queued at once, so a replica that dies with jobs in its queue would lose them. The
stand-in server here answers each call from a script: Queued then UNAVAILABLE (the replica
died with the job waiting), or a step of progress then UNAVAILABLE (it died running it),
or a whole job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
import tether
from conftest import free_port
from tether._proto.tether.v1 import tether_pb2, tether_pb2_grpc


class Scripted(tether_pb2_grpc.TetherServicer):
    """Answers the n-th Generate call with `script[n]`: "queued-then-gone",
    "started-then-gone" or "ok"."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls = 0

    def Generate(self, request, context) -> Iterator[tether_pb2.GenerateEvent]:
        answer = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        yield tether_pb2.GenerateEvent(queued=tether_pb2.Queued(position=0))
        if answer == "queued-then-gone":
            context.abort(grpc.StatusCode.UNAVAILABLE, "the replica went away")
        yield tether_pb2.GenerateEvent(progress=tether_pb2.Progress(step=1, total=1))
        if answer == "started-then-gone":
            context.abort(grpc.StatusCode.UNAVAILABLE, "the replica went away")
        event = tether_pb2.GenerateEvent()
        event.result.seed = request.seed
        event.result.image.raw.width = event.result.image.raw.height = 1
        event.result.image.raw.channels = 3
        event.result.image.raw.pixel_type = 1
        event.result.image.raw.data = bytes(3)
        yield event


@pytest.fixture
def serve():
    servers = []

    def start(script: list[str]) -> tuple[str, Scripted]:
        servicer = Scripted(script)
        server = grpc.server(futures.ThreadPoolExecutor(4))
        tether_pb2_grpc.add_TetherServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        server.stop(None)


def generate_sync(address: str) -> tether.Result:
    with tether.Client(address) as client:
        return client.generate("p", seed=5)


def generate_async(address: str) -> tether.Result:
    async def run() -> tether.Result:
        async with tether.aio.Client(address) as client:
            return await client.generate("p", seed=5)

    return asyncio.run(run())


@pytest.mark.parametrize("generate", [generate_sync, generate_async])
def test_a_job_lost_while_queued_is_sent_again(serve, generate):
    address, servicer = serve(["queued-then-gone", "queued-then-gone", "ok"])
    assert generate(address).seed == 5
    assert servicer.calls == 3


@pytest.mark.parametrize("generate", [generate_sync, generate_async])
def test_resends_stop_after_their_limit(serve, generate):
    address, servicer = serve(["queued-then-gone"])
    with pytest.raises(tether.Unavailable, match="went away"):
        generate(address)
    assert servicer.calls == 1 + tether.connection.GENERATE_RESENDS


@pytest.mark.parametrize("generate", [generate_sync, generate_async])
def test_a_job_that_had_started_is_not_sent_again(serve, generate):
    address, servicer = serve(["started-then-gone", "ok"])
    with pytest.raises(tether.Unavailable, match="went away"):
        generate(address)
    assert servicer.calls == 1
