"""clients/krita/build.py imported as a module, for the tests (it is a script, not a
package module)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BUILD = Path(__file__).resolve().parents[2] / "clients" / "krita" / "build.py"


def load_build() -> ModuleType:
    if "krita_build" in sys.modules:
        return sys.modules["krita_build"]
    spec = importlib.util.spec_from_file_location("krita_build", BUILD)
    module = importlib.util.module_from_spec(spec)
    sys.modules["krita_build"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
