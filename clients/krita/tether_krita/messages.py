"""Failures -> sentences a Krita user can act on. The one place that words errors."""

from __future__ import annotations

import tether

from .pixels import UnsupportedColorSpace


class UserError(Exception):
    """A condition the user can fix (no document, empty selection, ...): its message is
    shown as it is, without a traceback."""


def describe(error: BaseException, address: str) -> str:
    """The message shown in Krita for an exception raised while talking to `address`."""
    if isinstance(error, (UserError, UnsupportedColorSpace)):
        return str(error)
    detail = str(error).strip()
    if isinstance(error, tether.Unavailable):
        return (
            f"Cannot reach the Tether server at {address}. Check that it is running and "
            f"that the address is right. ({detail})"
        )
    if isinstance(error, tether.Unauthenticated):
        return f"The Tether server at {address} wants a valid token: check the Token field."
    if isinstance(error, tether.PermissionDenied):
        return f"The Tether server at {address} does not allow this token: {detail}"
    if isinstance(error, (tether.InvalidArgument, tether.NotFound)):
        return f"The Tether server rejected the request: {detail}"
    if isinstance(error, tether.ResourceExhausted):
        return f"The Tether server is busy or the request is too large: {detail}"
    if isinstance(error, tether.DeadlineExceeded):
        return f"The Tether server did not answer in time: {detail}"
    if isinstance(error, tether.TetherError):
        return f"The Tether server failed ({error.code}): {detail}. Its log has the details."
    return f"Unexpected error in the Tether plugin: {type(error).__name__}: {detail}"
