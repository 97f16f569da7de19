"""Engine worker processes behind the front, against real servers: a SIGKILLed worker, jobs
spread over two workers, metrics that move with traffic, request ids, a front without torch."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tether
from conftest import Server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tether import protocol
from tether._proto.tether.v1 import tether_pb2_grpc

SIZE = 64
ENGINE_STOPPED = "the engine stopped while running this job (SIGKILL); the job may be retried"


@pytest.fixture(scope="module")
def running():
    """One worker, one job per batch, metrics on: the tests below end with a SIGKILL."""
    server = Server("--max-batch", "1", "--metrics-port", "0").wait_serving()
    yield server
    server.stop()


def metrics(server: Server) -> dict[tuple[str, tuple], float]:
    """The server's /metrics as {(sample name, sorted labels): value}."""
    url = re.search(r"metrics on (http://\S+)", server.log.read_text()).group(1)
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_the_front_loads_no_torch(running):
    (worker,) = running.workers()
    assert "libtorch" in mapped_files(worker)  # what the check looks for is there to find
    front = mapped_files(running.process.pid)
    for library in ("libtorch", "cv2", "diffusers"):
        assert library not in front


def test_metrics_move_with_traffic(running):
    before = metrics(running)
    with tether.Client(running.address) as client:
        client.generate("x", steps=2, width=SIZE, height=SIZE)
        with pytest.raises(tether.InvalidArgument):
            client.generate("x", steps=0)
        with client.live(tether.LiveConfig("x")) as session:
            session.send(tether.LiveFrame(1, np.zeros((SIZE, SIZE, 3), dtype=np.uint8)))
            assert isinstance(next(iter(session)), tether.LiveResult)
            during = metrics(running)

    def grown(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    def settled() -> bool:
        """The server has seen the clients hang up (the SDK does once it has a result)."""
        generated = grown("tether_jobs_total", method="Generate", status="OK")
        return generated and not after[("tether_live_sessions", ())]

    deadline = time.monotonic() + 30
    after = metrics(running)
    while not settled():
        assert time.monotonic() < deadline
        time.sleep(0.1)
        after = metrics(running)

    assert grown("tether_jobs_total", method="Generate", status="OK") == 1
    assert grown("tether_jobs_total", method="Generate", status="INVALID_ARGUMENT") == 1
    assert grown("tether_queue_wait_seconds_count") == 2  # the job and the live frame
    assert grown("tether_batch_size_count") == 2 and grown("tether_step_seconds_count") == 2
    assert grown("tether_live_frames_total", outcome="result") == 1
    assert during[("tether_live_sessions", ())] == 1
    assert after[("tether_workers_ready", ())] == 1 and after[("tether_queue_depth", ())] == 0


def test_request_ids_in_metadata_and_log_lines(running):
    request = protocol.generate_request("x", steps=1, width=SIZE, height=SIZE)
    with grpc.insecure_channel(running.address) as channel:
        stub = tether_pb2_grpc.TetherStub(channel)
        call = stub.Generate(request)
        assert list(call)[-1].HasField("result")
        request_id = dict(call.initial_metadata())["x-request-id"]
        assert dict(call.trailing_metadata())["x-request-id"] == request_id
        request.steps = 0
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(request))
        refused_id = dict(caught.value.trailing_metadata())["x-request-id"]
    assert re.fullmatch("[0-9a-f]{16}", request_id) and refused_id != request_id
    log = running.log.read_text()
    assert re.search(rf"front tether.service \[{request_id}\]: Generate OK in", log)
    assert re.search(rf"\[{refused_id}\]: Generate INVALID_ARGUMENT in", log)


def test_bytes_that_are_no_request_are_refused_and_the_server_serves_on(running):
    with grpc.insecure_channel(running.address) as channel:
        generate = channel.unary_stream("/tether.v1.Tether/Generate")
        with pytest.raises(grpc.RpcError) as caught:
            list(generate(b"\xff\xff\xff"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "request: is not a tether.v1.GenerateRequest message"
    with tether.Client(running.address) as client:
        assert client.generate("x", steps=1, width=SIZE, height=SIZE).seed is not None


def consume(stream: tether.Stream, into: dict, key: str) -> threading.Thread:
    """Read `stream` to its end on a thread; `into[key]` is its last event or its error."""

    def read() -> None:
        try:
            into[key] = list(stream)[-1]
        except tether.TetherError as error:
            into[key] = error

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def test_a_killed_worker_ends_its_running_job_and_its_waiting_jobs_complete(running):
    outcomes = {}
    with tether.Client(running.address) as client, client.live(tether.LiveConfig("x")) as live:
        colour = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        live.send(tether.LiveFrame(1, colour))
        assert isinstance(next(iter(live)), tether.LiveResult)

        busy = iter(client.stream("x", steps=150, width=128, height=128))
        while not isinstance(next(busy), tether.Progress):
            pass  # running: a batch took it
        waiting = [client.stream("x", steps=2, width=SIZE, height=SIZE, seed=k) for k in range(2)]
        firsts = [next(iter(stream)) for stream in waiting]
        assert all(isinstance(event, tether.Queued) for event in firsts)
        threads = [consume(s, outcomes, f"waiting {k}") for k, s in enumerate(waiting)]
        (worker,) = running.workers()
        os.kill(worker, signal.SIGKILL)

        with pytest.raises(tether.Unavailable) as caught:
            list(busy)
        assert str(caught.value) == ENGINE_STOPPED
        for thread in threads:
            thread.join(timeout=120)
        assert all(isinstance(outcomes[f"waiting {k}"], tether.Result) for k in range(2))

        # The live session was told, and goes on on the restarted worker.
        event = next(iter(live))
        assert isinstance(event, tether.LiveError)
        assert event.message.startswith("the engine stopped (SIGKILL); the session goes on")
        live.send(tether.LiveFrame(2, colour))
        result = next(iter(live))
        assert isinstance(result, tether.LiveResult) and result.frame_id == 2

    assert health(running.address) == health_pb2.HealthCheckResponse.SERVING
    assert running.workers() != [worker]
    with tether.Client(running.address) as client:
        result = client.generate("x", steps=1, width=SIZE, height=SIZE)
        assert result.image.shape == (SIZE, SIZE, 3)
    assert metrics(running)[("tether_worker_restarts_total", ())] == 1
    log = running.log.read_text()
    assert "worker 0 exited (SIGKILL): 1 running job(s) ended, 2 waiting job(s) moved" in log


def test_two_workers_share_the_jobs_and_one_survives_the_others_death():
    server = Server("--workers", "2", "--max-batch", "1", "--metrics-port", "0").wait_serving()
    try:
        deadline = time.monotonic() + 120
        while metrics(server)[("tether_workers_ready", ())] < 2:  # serving with one already
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert len(server.workers()) == 2
        with tether.Client(server.address) as client:
            # With one worker and one job per batch, the second would wait for the first.
            long = [client.stream("x", steps=150, width=128, height=128) for _ in range(2)]
            for stream in long:
                events = iter(stream)
                while not isinstance(next(events), tether.Progress):
                    pass
            waiting = [client.stream("x", steps=2, width=SIZE, height=SIZE) for _ in range(2)]
            assert all(isinstance(next(iter(s)), tether.Queued) for s in waiting)
            outcomes = {}
            threads = [consume(s, outcomes, f"waiting {k}") for k, s in enumerate(waiting)]
            threads += [consume(s, outcomes, f"long {k}") for k, s in enumerate(long)]
            os.kill(server.workers()[0], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while "long 0" not in outcomes and "long 1" not in outcomes:
                # The other worker is ready throughout.
                assert health(server.address) == health_pb2.HealthCheckResponse.SERVING
                assert time.monotonic() < deadline
                time.sleep(0.2)
            ended = [outcomes.get(f"long {k}") for k in range(2)]
            killed = next(k for k in range(2) if ended[k] is not None)
            assert isinstance(ended[killed], tether.Unavailable)
            long[1 - killed].cancel()  # the survivor's worker takes the waiting jobs sooner
            for thread in threads:
                thread.join(timeout=120)
        assert all(isinstance(outcomes[f"waiting {k}"], tether.Result) for k in range(2))
        assert isinstance(outcomes[f"long {1 - killed}"], tether.Cancelled)
    finally:
        server.stop()
