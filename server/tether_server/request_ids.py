"""Request ids: one per call, made by the front, in every log line the call causes.

The front makes the id when a call arrives and returns it to the client in the initial and
trailing metadata (`x-request-id`); the id travels to the engine worker in the call's
header. `current` holds it for the task (and the threads it starts with asyncio.to_thread,
which copy the context) that serves the call, and the log format prints it.
"""

from __future__ import annotations

import contextvars
import logging
import secrets

METADATA_KEY = "x-request-id"
NONE = "-"  # a log line outside any call

current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NONE)


def new() -> str:
    """A fresh id: 16 hex digits."""
    return secrets.token_hex(8)


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):  # a line may name its requests itself
            record.request_id = current.get()
        return True


def configure_logging(process: str) -> None:
    """Log lines on stderr as `time process logger [request id]: message`; `process` tells
    the front's lines from each worker's (the workers share the front's stderr)."""
    handler = logging.StreamHandler()
    handler.addFilter(_WithRequestId())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {process} %(name)s [%(request_id)s]: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler])
