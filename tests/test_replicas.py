"""Replicas behind one client target: round robin and gRPC's retry policy (see
`tether.connection`), against real `tether serve` processes on real ports.

A target listing several addresses (`ipv4:A,B,C`) goes through the same balancing and
retry service config as `dns:///name:port` does for every address a name resolves to.
gRPC's channelz counts calls per channel and attempts per replica, which shows where the
calls went and how many were retried.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from grpc_channelz.v1 import channelz, channelz_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tether import connection, protocol
from tether._proto.tether.v1 import tether_pb2_grpc

SIZE = 64


@dataclass
class Attempts:
    """Channelz's counts for one client channel. A replica's counts include the health
    Watch call that the channel keeps open to it while connected (`watches`: 1 with
    client-side health checking, 0 without; these tests connect once to each replica)."""

    calls: int  # calls the application made
    started: dict[str, int]  # calls started per replica address ("127.0.0.1:PORT")
    ended: dict[str, int]  # calls ended per replica (succeeded, failed or cancelled)
    watches: int

    def tether(self, address: str) -> int:
        """Tether calls sent to the replica at `address` (first attempts and retries)."""
        return self.started[address] - self.watches

    @property
    def retries(self) -> int:
        return sum(self.tether(address) for address in self.started) - self.calls

    def in_flight(self, address: str) -> int:
        """Tether calls the replica at `address` holds now (while it is connected)."""
        return self.started[address] - self.ended[address] - self.watches


def subchannels(target: str) -> tuple[channelz_pb2.Channel, list[channelz_pb2.Subchannel]]:
    """Channelz's view of the open channel to `target` in this process and of its
    subchannels, one per replica (the servicer's methods are static; called in process
    they need no gRPC context)."""
    servicer = channelz.ChannelzServicer
    start = 0
    while True:
        page = servicer.GetTopChannels(
            channelz_pb2.GetTopChannelsRequest(start_channel_id=start), None
        )
        for channel in page.channel:
            if channel.data.target == target:
                requests = [
                    channelz_pb2.GetSubchannelRequest(subchannel_id=ref.subchannel_id)
                    for ref in channel.subchannel_ref
                ]
                return channel, [servicer.GetSubchannel(r, None).subchannel for r in requests]
        if page.end or not page.channel:
            raise LookupError(f"no open channel to {target}")
        start = max(channel.ref.channel_id for channel in page.channel) + 1


def attempts(target: str, watches: int = 1) -> Attempts:
    """Channelz's counts for the open channel to `target`."""
    channel, replicas = subchannels(target)
    started, ended = {}, {}
    for replica in replicas:
        address = replica.data.target.removeprefix("ipv4:")
        started[address] = replica.data.calls_started
        ended[address] = replica.data.calls_succeeded + replica.data.calls_failed
    return Attempts(channel.data.calls_started, started, ended, watches)


def connect_all(channel: grpc.Channel, target: str, replicas: int, timeout: float = 60) -> None:
    """Until the channel to `target` is connected to every replica: round robin picks only
    among connected ones, so a replica that connects late would miss the first calls."""
    grpc.channel_ready_future(channel).result(timeout=timeout)
    ready = channelz_pb2.ChannelConnectivityState.READY
    deadline = time.monotonic() + timeout
    while True:
        states = [replica.data.state.state for replica in subchannels(target)[1]]
        if states.count(ready) == replicas:
            return
        assert time.monotonic() < deadline, f"replicas not all connected: {states}"
        time.sleep(0.05)


def targets(*servers: str) -> str:
    return "ipv4:" + ",".join(servers)


class Loading(tether_pb2_grpc.TetherServicer):
    """What `tether serve` answers while it loads its models (tests/test_serve.py holds the
    real server to it): UNAVAILABLE on every Tether call, before any response."""

    def __init__(self) -> None:
        self.calls = 0

    def _refuse(self, request, context):
        self.calls += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "the server is loading its models")

    Generate = ListModels = GetServerInfo = Preprocess = _refuse


@pytest.fixture(scope="module")
def loading():
    """A replica that stays in its loading phase: health NOT_SERVING, Tether refusing."""
    server = grpc.server(futures.ThreadPoolExecutor(8))
    tether_pb2_grpc.add_TetherServicer_to_server(Loading(), server)
    status = health.HealthServicer()
    for name in ("", "tether.v1.Tether"):
        status.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_replica_that_is_not_serving_gets_no_calls(loading, server):
    target = targets(loading, server)
    with tether.Client(target) as client:
        seeds = [
            client.generate("x", steps=1, width=SIZE, height=SIZE, seed=s).seed for s in range(3)
        ]
        assert seeds == [0, 1, 2]
        assert attempts(target).tether(loading) == 0

    async def asynchronous() -> list[int]:
        async with tether.aio.Client(target) as client:
            jobs = [
                client.generate("x", steps=1, width=SIZE, height=SIZE, seed=s) for s in range(4)
            ]
            results = await asyncio.gather(*jobs)
            assert attempts(target).tether(loading) == 0
            return [result.seed for result in results]

    assert asyncio.run(asynchronous()) == [0, 1, 2, 3]


def test_a_client_of_a_loading_server_is_told_so(loading):
    """With health checking, a call to a server that is still loading never reaches it:
    the SDK says what gRPC's "backend unhealthy" means."""
    with tether.Client(loading) as client, pytest.raises(tether.Unavailable) as refused:
        client.models(timeout=10)
    assert "serving yet (it is loading its models, or draining)" in str(refused.value)


def test_a_call_refused_unavailable_is_retried_on_another_replica(loading, server):
    """Without health checking, round robin sends every call's first attempt to the loading
    replica, which refuses it UNAVAILABLE; the retry policy sends it to the other one."""
    target = targets(loading, server)
    options = [*connection.channel_options(), ("grpc.inhibit_health_checking", 1)]
    # Over 256 KiB, gRPC's default retry buffer: retried only because the SDK raises it.
    depth = tether.Control.depth(np.full((512, 512), 2.0, dtype=np.float32))
    requests = [
        protocol.generate_request("x", steps=1, width=SIZE, height=SIZE, seed=seed)
        for seed in range(3)
    ]
    requests.append(
        protocol.generate_request("x", steps=1, width=SIZE, height=SIZE, controls=[depth])
    )
    with grpc.insecure_channel(target, options=options) as channel:
        connect_all(channel, target, replicas=2)
        stub = tether_pb2_grpc.TetherStub(channel)
        for request in requests:
            events = list(stub.Generate(request))
            assert events[-1].HasField("result")
        counted = attempts(target, watches=0)
    # Round robin alternates, so every call but perhaps the first went to it first.
    assert counted.tether(loading) >= len(requests) - 1
    assert counted.retries == counted.tether(loading)


@dataclass
class Job:
    seed: int
    sent: bool = False
    after_kill: bool = False  # sent after the replica was killed
    events: list[str] = field(default_factory=list)  # "queued", "progress", "result"
    error: tether.TetherError | None = None
    done: bool = False


class Load:
    """`workers` threads sending `jobs` small generations through one client, recording
    what each job saw; `kill_when` SIGKILLs a replica under load."""

    def __init__(self, client: tether.Client, jobs: int, workers: int, steps: int) -> None:
        self.client, self.steps = client, steps
        self.jobs = [Job(seed) for seed in range(jobs)]
        self.lock = threading.Lock()
        self.killed = False
        self._next = iter(self.jobs)
        self.threads = [threading.Thread(target=self._work) for _ in range(workers)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while True:
            with self.lock:
                job = next(self._next, None)
                if job is None:
                    return
                job.sent, job.after_kill = True, self.killed
            try:
                stream = self.client.stream(
                    "x", steps=self.steps, width=SIZE, height=SIZE, seed=job.seed
                )
                for event in stream:
                    with self.lock:
                        job.events.append(type(event).__name__.lower())
            except tether.TetherError as error:
                job.error = error
            with self.lock:
                job.done = True

    def kill_when(self, replica: Server, target: str, running: int, timeout: float) -> int:
        """SIGKILL `replica` once `running` jobs have progress and the replica holds calls,
        at a moment when every job sent has been answered (so each call the replica holds
        is committed: it must end UNAVAILABLE) and none is within 3 steps of its result
        (which could be on its way already); returns how many calls the replica held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                in_flight = [job for job in self.jobs if job.sent and not job.done]
                answered = all(job.events for job in in_flight)
                steps = [job.events.count("progress") for job in in_flight]
                early = all(step <= self.steps - 3 for step in steps)
                progressing = sum(step > 0 for step in steps)
                held = attempts(target).in_flight(replica.address)
                if answered and early and progressing >= running and held:
                    replica.process.kill()
                    self.killed = True
                    return held
            time.sleep(0.02)
        raise TimeoutError("the load never reached the moment to kill a replica")

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a job hung"


def test_a_killed_replica_loses_only_the_jobs_it_was_running():
    """Three replicas, 18 jobs from 6 threads; one replica SIGKILLed while it runs jobs.
    The jobs it was running end UNAVAILABLE; every other job, those waiting in its queue
    included, completes on the others."""
    # One torch thread each: three replicas share the machine's cores.
    replicas = [Server("--max-batch", "2", env={"OMP_NUM_THREADS": "1"}) for _ in range(3)]
    try:
        for replica in replicas:
            replica.wait_serving()
        target = targets(*(replica.address for replica in replicas))
        victim = replicas[0]
        with tether.Client(target) as client:
            load = Load(client, jobs=18, workers=6, steps=8)
            load.start()
            held = load.kill_when(victim, target, running=3, timeout=60)
            load.join(timeout=90)
            counted = attempts(target)
    finally:
        for replica in replicas:
            replica.stop()

    failed = [job for job in load.jobs if job.error is not None]
    completed = [job for job in load.jobs if job.events[-1:] == ["result"]]
    figures = {
        "jobs": len(load.jobs),
        "completed": len(completed),
        "failed_unavailable": len(failed),
        "failed_while_running": sum("progress" in job.events for job in failed),
        "failed_while_queued": sum("progress" not in job.events for job in failed),
        "calls_held_by_killed_replica": held,
        "sent_after_kill": sum(job.after_kill for job in load.jobs),
        "retried_attempts": counted.retries,
        "sent_again_by_the_sdk": counted.calls - len(load.jobs),
        "calls_per_replica": {address: counted.tether(address) for address in counted.started},
        "errors": sorted({str(job.error) for job in failed}),
    }
    print(json.dumps(figures))
    assert all(isinstance(job.error, tether.Unavailable) for job in failed), figures
    assert len(completed) + len(failed) == len(load.jobs), figures
    # Only jobs the killed replica was running are lost: the SDK sends a job that was only
    # queued there again (tether.connection.GENERATE_RESENDS). Every call it held is one
    # or the other.
    assert held >= 1, figures
    assert len(failed) + figures["sent_again_by_the_sdk"] == held, figures
    assert all("progress" in job.events and not job.after_kill for job in failed), figures
    # Round robin spread the load over every replica.
    assert all(counted.tether(address) > 0 for address in counted.started), figures
