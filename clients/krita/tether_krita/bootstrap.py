"""Make the vendored libraries importable, or say in plain words why they are not.

Krita's embedded Python cannot pip-install, so the plugin zip carries the SDK (in
`vendor/common`) and compiled wheels of grpcio, protobuf and numpy unpacked into one
folder per platform and Python version (`vendor/<platform key>`, see `platform_key`).
Only this plugin's entries on `sys.path` change: nothing is installed, nothing outside
the plugin folder is written.

Standard library only: this runs before any dependency is known to import.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
COMMON = "common"
# Imported in this order: a failure names the first package that is missing.
REQUIRED = ("numpy", "google.protobuf", "grpc", "tether")

_SYSTEMS = {"win32": "windows", "darwin": "macos", "linux": "linux"}
_MACHINES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


def platform_key(
    system: str | None = None, machine: str | None = None, version: tuple[int, int] | None = None
) -> str:
    """The vendor folder for a Python: e.g. "linux-x86_64-cp311", "windows-x86_64-cp310",
    "macos-arm64-cp310". Defaults describe the running interpreter."""
    system = sys.platform if system is None else system
    machine = platform.machine() if machine is None else machine
    major, minor = sys.version_info[:2] if version is None else version
    system_name = _SYSTEMS.get("linux" if system.startswith("linux") else system, system)
    machine_name = _MACHINES.get(machine.lower(), machine.lower())
    return f"{system_name}-{machine_name}-cp{major}{minor}"


def prepare_dependencies(vendor_dir: Path = VENDOR_DIR) -> str | None:
    """Put this platform's vendored packages first on sys.path and import them all.
    Returns None when everything imports, else a message for the user."""
    key = platform_key()
    for folder in (vendor_dir / COMMON, vendor_dir / key):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any failure must become a message
            return missing_message(name, error, key, vendored_keys(vendor_dir))
    return None


def vendored_keys(vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """The platform keys this copy of the plugin carries libraries for."""
    if not vendor_dir.is_dir():
        return []
    return sorted(p.name for p in vendor_dir.iterdir() if p.is_dir() and p.name != COMMON)


def missing_message(name: str, error: BaseException, key: str, available: list[str]) -> str:
    python = ".".join(str(part) for part in sys.version_info[:3])
    if available:
        carried = f"This copy of the plugin carries libraries for: {', '.join(available)}."
    else:
        carried = "This copy of the plugin carries no libraries (it was not built with build.py)."
    return (
        f"The Tether plugin cannot load {name}: {type(error).__name__}: {error}\n\n"
        f"Krita runs Python {python} here, which needs the libraries for {key}. {carried}\n\n"
        "Install the Tether plugin zip made for your platform (Tools > Scripts > Import "
        "Python Plugin from File), or build one with:\n"
        f"    python clients/krita/build.py --target {key} --out dist/"
    )
