"""What can go wrong with a request, in words the service maps to gRPC status codes.

The engine, the request layer (`jobs`) and the worker raise these; `service.STATUS_CODES`
is the one table that turns them into status codes, and the SDK turns the codes back into
typed exceptions.
"""

from __future__ import annotations

# Longest piece of a client's string repeated in an error message: a message travels in
# the call's trailing metadata, whose size gRPC limits.
_SHOWN_CHARS = 60


class TetherError(Exception):
    """Base of every error a client is told about."""


class InvalidArgument(TetherError):
    """A request field is out of range or malformed, too large included. The message
    starts with the field."""


def invalid(field: str, message: str) -> InvalidArgument:
    """InvalidArgument for `field`, e.g. invalid("steps", "must be 1 to 150 (got 0)")."""
    return InvalidArgument(f"{field}: {message}")


def shown(value: str) -> str:
    """A client's string as an error message quotes it: repr, cut to a readable length."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


class NotFound(TetherError):
    """A named model or control model is not hosted by this server."""


class ResourceExhausted(TetherError):
    """The queue is full (`retry_after_ms` says when a place is likely to be free), or the
    engine ran out of memory (no retry hint: the same request would fail again)."""

    def __init__(self, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(TetherError):
    """The server is starting or draining."""


class Cancelled(TetherError):
    """The client went away or cancelled the job, or the server stopped before it ran."""


class Internal(TetherError):
    """The engine or the server failed on a request it had accepted: a bug."""


class ModelConfigError(Exception):
    """A model file or folder cannot be loaded as configured (raised at start-up)."""
