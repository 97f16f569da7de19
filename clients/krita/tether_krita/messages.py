"""Failures -> sentences a Krita user can act on: the SDK's one table
(`tether.background.describe`), pointed at where the plugin keeps the address and token."""

from __future__ import annotations

from tether import background


def describe(error: BaseException, address: str) -> str:
    """The message shown in Krita for an exception raised while talking to `address`."""
    return background.describe(error, address, where="the Tether docker")
