"""Prometheus metrics of the front, served at http://HOST:PORT/metrics (`--metrics-port`).

One registry, in the front process only. The engine workers report what only they see
(when a job left the queue, each batch's size and step time) in their messages to the
front, which it reads anyway; so there is no multiprocess mode, with its files per pid to
clean up after a worker is killed, and a restarted worker loses no counts.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

QUEUE_DEPTH = Gauge("tether_queue_depth", "Generate jobs accepted and waiting for the engine")
JOBS = Counter(
    "tether_jobs_total",
    "Generate and Preprocess calls by final status code",
    ["method", "status"],
)
QUEUE_WAIT = Histogram(
    "tether_queue_wait_seconds",
    "Time a job waited in its engine worker's queue",
    buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STEP = Histogram(
    "tether_step_seconds",
    "Mean denoising step time of a batch (all its jobs and units)",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
BATCH_SIZE = Histogram(
    "tether_batch_size", "Jobs per denoising loop", buckets=(1, 2, 3, 4, 6, 8, 12, 16)
)
WORKERS_READY = Gauge("tether_workers_ready", "Engine worker processes ready for jobs")
WORKER_RESTARTS = Counter(
    "tether_worker_restarts_total", "Engine worker processes started again after exiting"
)
LIVE_SESSIONS = Gauge("tether_live_sessions", "Live sessions open")
LIVE_FRAMES = Counter(
    "tether_live_frames_total",
    "Live frames by outcome: result, reused, error, dropped (replaced by a newer frame "
    "before processing) or lost (its engine worker stopped)",
    ["outcome"],
)


def serve(host: str, port: int) -> int:
    """Serve /metrics on a thread; returns the port (`port` 0: any free one)."""
    server, _ = start_http_server(port, addr=host)
    return server.server_port
