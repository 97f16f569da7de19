"""What can go wrong with a request, in words the service maps to gRPC status codes.

The engine and the service raise these; `service.STATUS_CODES` is the one table that turns
them into status codes, and the SDK turns the codes back into typed exceptions.
"""


class TetherError(Exception):
    """Base of every error a client is told about."""


class InvalidArgument(TetherError):
    """A request field is out of range or malformed. The message starts with the field."""


def invalid(field: str, message: str) -> InvalidArgument:
    """InvalidArgument for `field`, e.g. invalid("steps", "must be 1 to 150 (got 0)")."""
    return InvalidArgument(f"{field}: {message}")


class NotFound(TetherError):
    """A named model or control model is not hosted by this server."""


class ResourceExhausted(TetherError):
    """The queue is full or a request is over a size limit."""


class Unavailable(TetherError):
    """The server is starting or draining."""


class Cancelled(TetherError):
    """The client went away or cancelled the job."""


class ModelConfigError(Exception):
    """A model file or folder cannot be loaded as configured (raised at start-up)."""
