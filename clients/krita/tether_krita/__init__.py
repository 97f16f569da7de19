"""Tether for Krita: repaint a selection with Stable Diffusion + ControlNet, keeping its
edges. Krita imports this package when the plugin is enabled.

Outside Krita (the tests, build.py) there is no `krita` module and importing the package
registers nothing, so its pure modules (geometry, pixels, masks, ...) can be used alone.
"""

try:
    # Krita's own module; asking for a name in it also rules out a folder called "krita"
    # on sys.path (tests/krita) passing for it.
    from krita import Krita  # noqa: F401
except ImportError:
    _IN_KRITA = False
else:
    _IN_KRITA = True

if _IN_KRITA:
    from .bootstrap import prepare_dependencies
    from .registration import register

    register(prepare_dependencies())
