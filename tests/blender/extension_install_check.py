"""Install a built extension zip into Blender the way a user does, and use it.

Run by tests/test_blender.py with the .venv-blender Python and BLENDER_USER_RESOURCES set
to an empty temporary folder (so nothing lands in the user's real Blender config):

    python tests/blender/extension_install_check.py --zip ZIP --server HOST:PORT --out OUT

A stock Blender has no grpcio, protobuf or Tether SDK; this venv has grpcio and protobuf
for the in-tree tests, so an import guard makes this process behave like stock Blender:
`tether`, `grpc` and `google` (protobuf) may only come from the wheels the extension
installed. Measurements go to OUT as JSON; tests/test_blender.py judges them.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import traceback
from pathlib import Path
from typing import Any

REPOSITORY = "user_default"
MODULE = f"bl_ext.{REPOSITORY}.tether_blender"
GUARDED = {"tether", "grpc", "google"}


class OnlyFromExtensionWheels(importlib.abc.MetaPathFinder):
    """Top-level imports of GUARDED packages are searched only in the folder where
    Blender installs extension wheels; anything else there is a ModuleNotFoundError."""

    def __init__(self, site_packages: Path) -> None:
        self.site_packages = site_packages

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if path is not None or name.partition(".")[0] not in GUARDED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [str(self.site_packages)])
        if spec is None:
            raise ModuleNotFoundError(f"{name} is not installed from the extension's wheels")
        return spec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zip", type=Path, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    try:
        run(args, results)
    except Exception:
        results["crashed"] = traceback.format_exc()
    args.out.write_text(json.dumps(results, indent=1))
    return 0


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    import bpy

    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = Path(
        bpy.utils.user_resource("EXTENSIONS", path=f".local/lib/{python}/site-packages")
    )
    for name in GUARDED:
        assert name not in sys.modules, f"{name} was imported before the guard"
    sys.meta_path.insert(0, OnlyFromExtensionWheels(site_packages))

    bpy.ops.wm.read_factory_settings(use_empty=True)
    results["install"] = sorted(
        bpy.ops.extensions.package_install_files(
            filepath=str(args.zip),
            repo=REPOSITORY,
            enable_on_install=True,
        )
    )
    results["enabled"] = MODULE in bpy.context.preferences.addons
    import grpc
    import tether

    results["tether_from_wheel"] = Path(tether.__file__).is_relative_to(site_packages)
    results["grpc_from_wheel"] = Path(grpc.__file__).is_relative_to(site_packages)
    results["has_numpy_wheel"] = (site_packages / "numpy").exists()

    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.address = args.server
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -5.0, 0.0)
    camera.rotation_euler = (1.5707963, 0.0, 0.0)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = 32, 32
    scene.render.resolution_percentage = 100
    scene.tether.steps = 2
    try:
        results["generate"] = sorted(bpy.ops.tether.generate(wait=True))
    except RuntimeError as error:
        results["generate"] = [str(error)]

    bpy.ops.preferences.addon_disable(module=MODULE)
    results["disabled_clean"] = not hasattr(bpy.types.Scene, "tether") and not any(
        name.startswith("TETHER_OT_") for name in dir(bpy.types)
    )
    repo_index = [repo.module for repo in bpy.context.preferences.extensions.repos].index(
        REPOSITORY
    )
    results["uninstall"] = sorted(
        bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id="tether_blender")
    )
    results["folder_removed"] = not Path(
        bpy.utils.user_resource("EXTENSIONS", path=f"{REPOSITORY}/tether_blender")
    ).exists()


if __name__ == "__main__":
    sys.exit(main())
