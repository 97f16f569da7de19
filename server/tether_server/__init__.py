"""Tether's server side: models, the diffusion engine and the gRPC service. Torch lives here."""

from tether import __version__

__all__ = ["__version__"]
