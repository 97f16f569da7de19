"""What the hop to an engine worker process costs: Generate end to end, workers vs in-process.

    python tests/bench/serving.py                 # tiny model, CPU
    python tests/bench/serving.py --threads 1     # torch single-threaded on both servers
    python tests/bench/serving.py --device cuda --dtype float16 --size 512

Two real servers on free ports, both on the embedded tiny model and the same device:
- `workers`: this checkout's `tether serve --workers 1` (the front forwards each request
  to an engine worker process over ZMQ; events come back the same way);
- `in_process`: the last server that ran the engine on a thread of the gRPC process
  (commit BASELINE, its sdk/ and server/ taken from the repository's history with `git
  archive` and run with those first on PYTHONPATH).
The same client (this checkout's SDK) sends each setting's request to one server, then to
the other, --rounds times (after a warm-up request each), so that both see the same load.
Reported per setting and server, as medians: wall time per request on the client (`ms`;
`ratio` = workers / in-process, target <= 1.05 on the CPU), the step time the engine
reports (denoise_ms / steps), and the serving overhead (the wall time less the engine's
prepare, denoise and decode: gRPC, request conversion, the hop, encoding); and the
fastest wall time of each, whose ratio (`ratio_min`) other load on the machine disturbs
least.
`busy_front` repeats one setting while --pollers threads call GetServerInfo without pause:
in-process, that work shares the interpreter lock with the denoising loop; with workers it
runs in the front's own process. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tether

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Server  # noqa: E402

# The last commit whose server ran the engine on a thread of the gRPC process.
BASELINE = "b160ff98fe8b987eca749a8a2f843510b746e09b"
UNITS = ("canny", "depth", "normal")
# (size, steps, units, preview)
SETTINGS = [(64, 2, 0, "none"), (64, 4, 3, "fast"), (128, 4, 1, "none"), (256, 2, 0, "fast")]


def extract(commit: str, folder: Path) -> None:
    """sdk/ and server/ of `commit` into `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "sdk", "server"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")


def request(size: int, steps: int, units: int, preview: str, seed: int) -> dict:
    grey = np.full((size, size, 3), 128, dtype=np.uint8)
    return dict(
        prompt="a castle",
        controls=[tether.Control(name, grey) for name in UNITS[:units]],
        steps=steps,
        seed=seed,
        width=size,
        height=size,
        preview=preview,
    )


def timed(client: tether.Client, settings: dict) -> dict[str, float]:
    """One Generate, previews streamed: wall ms on the client, the engine's step ms, and
    the serving overhead: the wall time less the engine's prepare, denoise and decode."""
    started = time.perf_counter()
    timings = client.stream(**settings).result().timings
    wall = (time.perf_counter() - started) * 1000
    return {
        "ms": wall,
        "step_ms": timings.denoise_ms / settings["steps"],
        "overhead_ms": wall - timings.prepare_ms - timings.denoise_ms - timings.decode_ms,
    }


def summary(samples: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Medians per server, the fastest wall time (the least disturbed by other load on the
    machine), and the ratios of both (workers / in-process)."""
    row = {}
    for name, runs in samples.items():
        for key in runs[0]:
            row[f"{name}_{key}"] = round(statistics.median(run[key] for run in runs), 2)
        row[f"{name}_min_ms"] = round(min(run["ms"] for run in runs), 2)
    row["ratio"] = round(row["workers_ms"] / row["in_process_ms"], 3)
    row["ratio_min"] = round(row["workers_min_ms"] / row["in_process_min_ms"], 3)
    return row


def compare(clients: dict[str, tether.Client], settings: dict, rounds: int) -> dict:
    """Each round sends the request to one server then the other, alternating which goes
    first, so that both see the machine's load alike."""
    samples: dict[str, list] = {name: [] for name in clients}
    for client in clients.values():
        timed(client, settings)  # warm-up: this size's kernels and allocations
    for k in range(rounds):
        order = list(clients) if k % 2 == 0 else list(reversed(clients))
        for name in order:
            samples[name].append(timed(clients[name], settings))
    return summary(samples)


def busy_front(clients: dict[str, tether.Client], settings: dict, rounds: int, pollers: int):
    samples: dict[str, list] = {}
    for name, client in clients.items():
        stop = threading.Event()

        def poll(client: tether.Client = client, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                client.server_info()

        threads = [threading.Thread(target=poll) for _ in range(pollers)]
        for thread in threads:
            thread.start()
        try:
            timed(client, settings)
            samples[name] = [timed(client, settings) for _ in range(rounds)]
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    return summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="requests per setting and server")
    parser.add_argument("--baseline", default=BASELINE, help="commit of the in-process server")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--size", type=int, help="one size instead of the default settings")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of both servers")
    parser.add_argument("--pollers", type=int, default=4, help="GetServerInfo threads (busy)")
    args = parser.parse_args()
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    options = ("--device", args.device, "--dtype", args.dtype)
    settings = SETTINGS
    if args.size:
        settings = [(args.size, steps, units, preview) for _, steps, units, preview in SETTINGS]

    with tempfile.TemporaryDirectory(prefix="tether-baseline-") as folder:
        extract(args.baseline, Path(folder))
        path = os.pathsep.join([f"{folder}/sdk", f"{folder}/server"])
        servers = {
            "in_process": Server(*options, env={**env, "PYTHONPATH": path}),
            "workers": Server(*options, "--workers", "1", env=env),
        }
        try:
            for server in servers.values():
                server.wait_serving(timeout=600)
            clients = {name: tether.Client(s.address) for name, s in servers.items()}
            rows = []
            for size, steps, units, preview in settings:
                row = {"size": size, "steps": steps, "units": units, "preview": preview}
                row.update(compare(clients, request(size, steps, units, preview, 1), args.rounds))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            size, steps, units, preview = settings[2]
            busy = {"size": size, "steps": steps, "units": units, "pollers": args.pollers}
            busy.update(
                busy_front(
                    clients, request(size, steps, units, preview, 1), args.rounds, args.pollers
                )
            )
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()
    ratios = [row["ratio"] for row in rows]
    print(
        json.dumps(
            {
                "benchmark": "serving",
                "model": "tiny",
                "device": args.device,
                "dtype": args.dtype,
                "omp_num_threads": args.threads,
                "baseline": args.baseline,
                "rounds": args.rounds,
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_max": max(ratios),
                "ratio_min_median": round(statistics.median(r["ratio_min"] for r in rows), 3),
                "settings": rows,
                "busy_front": busy,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
