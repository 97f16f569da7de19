"""Where the server is and whether Blender allows reaching it. No bpy here.

Blender's extension rules ask add-ons with the "network" permission to respect
``bpy.app.online_access`` (Preferences > System > Network > Allow Online Access). A
Tether server on this machine is not "online": loopback traffic never leaves the
computer, so a local server works with online access off, and any other address needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tether
from tether import background

__all__ = ["ClientConfig", "address_problem", "describe", "is_loopback", "open_client"]


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the server: the add-on preferences, read once on the main thread."""

    address: str
    token: str
    use_tls: bool
    tls_root_certificate: str  # a PEM file to trust instead of the system roots; "" = system

    @property
    def tls(self) -> bool | str:
        """The value of `tether.Client`'s ``tls`` argument."""
        if not self.use_tls:
            return False
        return self.tls_root_certificate or True


def host_of(address: str) -> str:
    """The host part of "host:port", "[v6]:port" or a bare host."""
    address = address.strip()
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else address[1:]
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return address  # a bare host, or a bare IPv6 address without a port


def is_loopback(address: str) -> bool:
    """True when "host:port" names this machine (localhost, 127.0.0.0/8, ::1)."""
    return tether.connection.is_loopback(host_of(address).lower())


def address_problem(config: ClientConfig, *, online_access: bool) -> str | None:
    """Why the add-on must not connect with this configuration, or None when it may."""
    address = config.address.strip()
    if not address or not host_of(address):
        return "Set the Tether server address in the add-on preferences (e.g. 127.0.0.1:50051)"
    if not online_access and not is_loopback(address):
        return (
            f"Online access is disabled (Preferences > System > Network), so Tether will not "
            f"connect to {address}; allow online access or run the server on this computer"
        )
    if config.use_tls and config.tls_root_certificate:
        if not Path(config.tls_root_certificate).is_file():
            return f"TLS root certificate not found: {config.tls_root_certificate}"
    return None


def open_client(config: ClientConfig) -> tether.Client:
    """A client for this configuration; the caller closes it."""
    return tether.Client(config.address.strip(), token=config.token or None, tls=config.tls)


def describe(error: BaseException, config: ClientConfig) -> str:
    """A message for the user: what went wrong and what to do (the SDK's one table, with
    the add-on preferences as where the address and token are set)."""
    return background.describe(error, config.address.strip(), where="the add-on preferences")
