"""Typed exceptions for gRPC status codes: the one place where the SDK maps them."""

from __future__ import annotations

import grpc


class TetherError(Exception):
    """Base of every error the SDK raises for a failed call. `str(error)` is the server's
    message; `code` names the gRPC status, e.g. "INVALID_ARGUMENT"."""

    code = "UNKNOWN"


class InvalidArgument(TetherError):
    """A request field is out of range or malformed; the message names the field."""

    code = "INVALID_ARGUMENT"


class NotFound(TetherError):
    """An unknown model or control model."""

    code = "NOT_FOUND"


class ResourceExhausted(TetherError):
    """The server's queue is full, or a request is over a size limit."""

    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(TetherError):
    """No token, or the wrong one."""

    code = "UNAUTHENTICATED"


class PermissionDenied(TetherError):
    code = "PERMISSION_DENIED"


class Unavailable(TetherError):
    """The server is unreachable, starting or draining."""

    code = "UNAVAILABLE"


class Cancelled(TetherError):
    """The call was cancelled."""

    code = "CANCELLED"


class DeadlineExceeded(TetherError):
    """The call's timeout passed."""

    code = "DEADLINE_EXCEEDED"


class Internal(TetherError):
    """The server failed; its log has the details."""

    code = "INTERNAL"


_BY_STATUS: dict[grpc.StatusCode, type[TetherError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


# What gRPC's client-side health checking (tether.connection) says when every server of a
# target reports NOT_SERVING: the call never reached one, so no server's own words came.
_UNHEALTHY = "backend unhealthy"


def from_status(code: grpc.StatusCode, message: str) -> TetherError:
    """The typed exception for a status code and the server's message."""
    if code == grpc.StatusCode.UNAVAILABLE and message.endswith(_UNHEALTHY):
        message = (
            "no server at this address is serving yet (it is loading its models, or "
            f"draining); retry when its health is SERVING ({message})"
        )
    error = _BY_STATUS.get(code, TetherError)(message or code.name)
    if error.code == TetherError.code:
        error.code = code.name
    return error


def no_result() -> Internal:
    """The error for a Generate stream that ended without its Result (a server bug, or a
    proxy that cut the stream): the one place this case is worded."""
    return Internal("the server ended the stream without a result")
