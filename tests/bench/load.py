"""Load and fault benchmark: concurrent streams, a worker SIGKILLed under load, dropped
live sessions; then what is left behind.

    python tests/bench/load.py              # tiny model, CPU, two engine workers
    python tests/bench/load.py --streams 50 --live 100 --workers 2

1. Warm-up, then the server's processes (the front and its workers) are measured: RSS and
   threads.
2. --streams Generate streams at once (asyncio SDK), each of a random size, 1 to 3 units,
   2 to 4 steps, fast previews or none; 30% are cancelled by their client at a random
   moment. Once a quarter of them have finished, one engine worker is SIGKILLed.
3. --live live sessions (raw gRPC, --live-at-once at a time) each send a config and a frame,
   half of them read a result, and all are dropped by their client (the call cancelled).
4. A good Generate and a live frame must succeed; once the killed worker is back and
   warmed up as the others were, the processes are measured again.
Prints one JSON object: hung streams (no end within --hung-seconds; target 0), status codes
(no UNKNOWN or INTERNAL), p50/p95 latency of the streams that finished, streams that ended
with other than exactly one Result, live sessions still counted, and the growth of RSS
(target: within 50 MB of the start) and threads.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import tether
from tether import connection, protocol
from tether._proto.tether.v1 import tether_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Server  # noqa: E402

SIZES = (64, 96)
UNITS = ("canny", "depth", "normal")
CANCELLED_SHARE = 0.3


def processes(server: Server) -> dict[str, dict[str, int]]:
    """RSS (KiB) and threads of the front and of each engine worker."""
    measured = {}
    for name, pid in [("front", server.process.pid)] + [
        (f"worker pid {pid}", pid) for pid in server.workers()
    ]:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        measured[name] = {
            "rss_kib": int(fields["VmRSS"].split()[0]),
            "threads": int(fields["Threads"]),
        }
    return measured


def totals(measured: dict[str, dict[str, int]]) -> dict[str, float]:
    return {
        "rss_mb": round(sum(p["rss_kib"] for p in measured.values()) / 1024, 1),
        "threads": sum(p["threads"] for p in measured.values()),
    }


def settings(rng: np.random.Generator) -> dict:
    size = int(rng.choice(SIZES))
    units = int(rng.integers(1, 4))
    picture = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return dict(
        prompt=f"load {rng.integers(1000)}",
        controls=[tether.Control(name, picture) for name in UNITS[:units]],
        steps=int(rng.integers(2, 5)),
        width=size,
        height=size,
        preview=str(rng.choice(["none", "fast"])),
    )


async def one_stream(
    client: tether.aio.Client,
    request: dict,
    cancel_after: float | None,
    hung_seconds: float,
    finished: asyncio.Queue,
) -> dict:
    stream = client.stream(**request)
    results = 0
    started = time.perf_counter()

    async def read() -> None:
        nonlocal results
        async for event in stream:
            results += isinstance(event, tether.Result)

    reading = asyncio.create_task(read())
    try:
        if cancel_after is not None:
            done, _ = await asyncio.wait([reading], timeout=cancel_after)
            if not done:
                stream.cancel()
        await asyncio.wait_for(reading, hung_seconds)
        status = "OK"
    except TimeoutError:
        status = "HUNG"
    except tether.TetherError as error:
        status = error.code
    except asyncio.CancelledError:
        # grpc.aio ends the iteration of a call cancelled meanwhile this way, not with
        # the SDK's tether.Cancelled.
        if cancel_after is None:
            raise
        status = "CANCELLED"
    finished.put_nowait(status)
    return {
        "status": status,
        "ms": (time.perf_counter() - started) * 1000,
        "results": results,
        "cancelled_by_client": cancel_after is not None,
    }


async def kill_a_worker(server: Server, finished: asyncio.Queue, after: int) -> dict:
    for _ in range(after):
        await finished.get()
    pid = server.workers()[0]
    os.kill(pid, signal.SIGKILL)
    while not (said := re.search(r"worker \d+ exited \(SIGKILL\): (.*)", server.log.read_text())):
        await asyncio.sleep(0.1)
    return {"pid": pid, "after_finished_streams": after, "front_says": said.group(1)}


async def load(server: Server, count: int, hung_seconds: float, seed: int) -> tuple[list, dict]:
    rng = np.random.default_rng(seed)
    finished: asyncio.Queue = asyncio.Queue()
    async with tether.aio.Client(server.address) as client:
        calls = []
        for _ in range(count):
            cancel_after = float(rng.uniform(0, 3)) if rng.random() < CANCELLED_SHARE else None
            calls.append(one_stream(client, settings(rng), cancel_after, hung_seconds, finished))
        killer = asyncio.create_task(kill_a_worker(server, finished, count // 4))
        streams = await asyncio.gather(*calls)
        return streams, await killer


async def dropped_live_sessions(server: Server, count: int, at_once: int) -> dict:
    """Each session sends a config and a frame; every other one reads a result first; then
    its client cancels the call."""
    config = protocol.live_config_request(tether.LiveConfig("drop", steps=2))
    frame = protocol.live_frame_request(
        tether.LiveFrame(1, np.zeros((SIZES[0], SIZES[0], 3), dtype=np.uint8))
    )
    read = 0
    async with grpc.aio.insecure_channel(server.address, options=connection.options()) as channel:
        stub = tether_pb2_grpc.TetherStub(channel)

        async def one(k: int) -> None:
            nonlocal read
            call = stub.Live()
            await call.write(config)
            await call.write(frame)
            if k % 2:
                await call.read()
                read += 1
            call.cancel()

        for first in range(0, count, at_once):
            await asyncio.gather(*(one(k) for k in range(first, min(first + at_once, count))))
        deadline = time.monotonic() + 60
        async with tether.aio.Client(server.address) as client:
            while (left := (await client.server_info()).live_sessions) and (
                time.monotonic() < deadline
            ):
                await asyncio.sleep(0.2)
    return {"dropped": count, "read_a_result_first": read, "live_sessions_left": left}


async def still_serving(server: Server) -> bool:
    async with tether.aio.Client(server.address) as client:
        result = await client.generate("after", steps=2, width=SIZES[0], height=SIZES[0])
        frame = tether.LiveFrame(1, np.zeros((SIZES[0], SIZES[0], 3), dtype=np.uint8))
        async with client.live(tether.LiveConfig("after")) as session:
            await session.send(frame)
            async for event in session:
                return result.image.shape == (SIZES[0], SIZES[0], 3) and isinstance(
                    event, tether.LiveResult
                )
    return False


async def warm_up(server: Server, seed: int) -> None:
    """Every size and unit count on the workers, and a live session: allocations that stay."""
    rng = np.random.default_rng(seed + 1)
    async with tether.aio.Client(server.address) as client:
        await asyncio.gather(*(client.generate(**settings(rng)) for _ in range(12)))
    await dropped_live_sessions(server, 4, 4)


def wait_ready(server: Server, starts: int) -> None:
    """Until `starts` worker starts have been ready, as the front's log says."""
    deadline = time.monotonic() + 600
    while server.log.read_text().count(": ready on ") < starts:
        assert time.monotonic() < deadline, f"fewer than {starts} worker starts were ready"
        time.sleep(0.5)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


async def run(args: argparse.Namespace, server: Server) -> dict:
    await warm_up(server, args.seed)
    await asyncio.sleep(args.settle_seconds)
    before = processes(server)
    started = time.perf_counter()
    streams, killed = await load(server, args.streams, args.hung_seconds, args.seed)
    load_s = time.perf_counter() - started
    live = await dropped_live_sessions(server, args.live, args.live_at_once)
    serving = await still_serving(server)
    # The restarted worker, warmed up as the others were, before the second measure.
    await asyncio.to_thread(wait_ready, server, args.workers + 1)
    await warm_up(server, args.seed)
    await asyncio.sleep(args.settle_seconds)
    after = processes(server)
    latencies = [s["ms"] for s in streams if s["status"] == "OK"]
    start, end = totals(before), totals(after)
    return {
        "benchmark": "load",
        "model": "tiny",
        "workers": args.workers,
        "streams": args.streams,
        "cancelled_by_client": sum(s["cancelled_by_client"] for s in streams),
        "killed_worker": killed,
        "load_seconds": round(load_s, 1),
        "hung_streams": sum(s["status"] == "HUNG" for s in streams),
        "statuses": dict(collections.Counter(s["status"] for s in streams)),
        "ok_without_one_result": sum(s["status"] == "OK" and s["results"] != 1 for s in streams),
        "latency_ms": {
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
        },
        "live": live,
        "serving_after": serving,
        "before": {**start, "processes": before},
        "after": {**end, "processes": after},
        "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 1),
        "front_rss_growth_mb": round(
            (after["front"]["rss_kib"] - before["front"]["rss_kib"]) / 1024, 1
        ),
        "thread_growth": end["threads"] - start["threads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--live", type=int, default=100, help="live sessions to drop")
    parser.add_argument("--live-at-once", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hung-seconds", type=float, default=300.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # Room for every stream: this measures faults, not the queue limit.
    server = Server("--workers", str(args.workers), "--max-queue", str(2 * args.streams))
    try:
        server.wait_serving(timeout=600)
        wait_ready(server, args.workers)
        report = asyncio.run(run(args, server))
    finally:
        server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
