"""Package the Blender extension: one installable zip per platform.

    python clients/blender/build.py --out dist/                      # all platforms
    python clients/blender/build.py --out dist/ --platform linux-x64

Each zip is what ``blender --command extension build --split-platforms`` would make from
the add-on folder with its wheels, built here without a Blender binary: the add-on's
files, a ``wheels/`` folder and a manifest naming that one platform and its wheels.
The wheels are the Tether SDK (a pure-Python wheel built from sdk/tether) and the SDK's
dependencies except numpy, which Blender brings: grpcio and protobuf (and what they
need), downloaded from the package index for Blender's Python (3.11) and that platform.

Needs pip (the project venv has it) and access to the package index.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
ADDON_DIR = Path(__file__).resolve().parent / "tether_blender"
SDK_DIR = REPO / "sdk" / "tether"
PYPROJECT = REPO / "pyproject.toml"

# Blender 4.2 to 5.0 embed CPython 3.11; the manifest's blender_version_max says so too.
PYTHON_VERSION = "3.11"
# pip platform tags per Blender platform: Blender 4.2+ needs glibc 2.28 and macOS 11.2, so
# wheels for those or older systems fit. pip does not widen manylinux tags by itself.
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64"],
    "macos-x64": ["macosx_11_0_x86_64"],
}
# Blender ships numpy; a second copy from a wheel would shadow it.
PROVIDED_BY_BLENDER = {"numpy"}
# Fixed timestamps: a zip's bytes depend only on the files in it.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_EXCLUDED_PARTS = {"__pycache__"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder")
    parser.add_argument(
        "--platform",
        action="append",
        choices=sorted(PLATFORM_TAGS),
        help="build for this platform only (repeatable); default: all in the manifest",
    )
    args = parser.parse_args(argv)
    try:
        paths = build(args.out, args.platform)
    except BuildError as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


class BuildError(RuntimeError):
    """The build cannot go on; the message says why."""


def build(out: Path, platforms: list[str] | None = None) -> list[Path]:
    """Build the zips into ``out``; returns their paths."""
    manifest = tomllib.loads((ADDON_DIR / "blender_manifest.toml").read_text(encoding="utf-8"))
    declared = manifest["platforms"]
    platforms = platforms or declared
    unknown = [p for p in platforms if p not in declared]
    if unknown:
        raise BuildError(f"platforms {unknown} are not in the manifest's {declared}")
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = [
        requirement
        for requirement in project["dependencies"]
        if _requirement_name(requirement) not in PROVIDED_BY_BLENDER
    ]
    out.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="tether-blender-build-") as temp:
        temp_dir = Path(temp)
        sdk_wheel = build_sdk_wheel(temp_dir, project)
        for platform in platforms:
            wheel_dir = temp_dir / platform
            download_wheels(requirements, PLATFORM_TAGS[platform], wheel_dir)
            wheels = [sdk_wheel, *sorted(wheel_dir.glob("*.whl"))]
            built.append(write_extension_zip(out, manifest, platform, wheels))
    return built


def build_sdk_wheel(folder: Path, project: dict) -> Path:
    """A pure-Python wheel of sdk/tether, so Blender installs the SDK as it installs any
    bundled wheel (``import tether`` then works without touching sys.path)."""
    version = project["version"]
    dist_info = f"tether-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(SDK_DIR.rglob("*")):
        if path.is_file() and not _excluded(path.relative_to(SDK_DIR)):
            files.append((f"tether/{path.relative_to(SDK_DIR).as_posix()}", path.read_bytes()))
    metadata = [
        "Metadata-Version: 2.1",
        "Name: tether",
        f"Version: {version}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.10')}",
        *(f"Requires-Dist: {requirement}" for requirement in project["dependencies"]),
    ]
    wheel = [
        "Wheel-Version: 1.0",
        "Generator: tether clients/blender/build.py",
        "Root-Is-Purelib: true",
        "Tag: py3-none-any",
    ]
    files.append((f"{dist_info}/METADATA", ("\n".join(metadata) + "\n").encode()))
    files.append((f"{dist_info}/WHEEL", ("\n".join(wheel) + "\n").encode()))
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files]
    record.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))

    path = folder / f"tether-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, _ZIP_DATE), data, zipfile.ZIP_DEFLATED)
    return path


def download_wheels(requirements: list[str], platform_tags: list[str], folder: Path) -> None:
    """Binary wheels of ``requirements`` and their dependencies for one platform."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        *(argument for tag in platform_tags for argument in ("--platform", tag)),
        "--dest",
        str(folder),
        *requirements,
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BuildError(f"pip download for {platform_tags[0]} failed:\n{completed.stderr.strip()}")
    found = {_requirement_name(w.name.split("-")[0]) for w in folder.glob("*.whl")}
    missing = {_requirement_name(r) for r in requirements} - found
    if missing:
        raise BuildError(f"no wheels of {sorted(missing)} for {platform_tags[0]}")


def write_extension_zip(out: Path, manifest: dict, platform: str, wheels: list[Path]) -> Path:
    """The installable zip for one platform, named as Blender's build names it."""
    wheel_paths = [f"./wheels/{wheel.name}" for wheel in wheels]
    platform_manifest = {**manifest, "platforms": [platform], "wheels": wheel_paths}
    path = out / f"{manifest['id']}-{manifest['version']}-{platform.replace('-', '_')}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr(
            zipfile.ZipInfo("blender_manifest.toml", _ZIP_DATE),
            to_toml(platform_manifest),
            zipfile.ZIP_DEFLATED,
        )
        for source in sorted(ADDON_DIR.rglob("*")):
            relative = source.relative_to(ADDON_DIR)
            if (
                source.is_file()
                and not _excluded(relative)
                and relative.name != ("blender_manifest.toml")
            ):
                archive.writestr(
                    zipfile.ZipInfo(relative.as_posix(), _ZIP_DATE),
                    source.read_bytes(),
                    zipfile.ZIP_DEFLATED,
                )
        for wheel in wheels:
            # Wheels are zips already: stored, as Blender's own build does.
            archive.writestr(
                zipfile.ZipInfo(f"wheels/{wheel.name}", _ZIP_DATE),
                wheel.read_bytes(),
                zipfile.ZIP_STORED,
            )
    return path


def to_toml(manifest: dict) -> str:
    """The manifest as TOML. It holds strings, lists of strings and tables of those;
    anything else is refused rather than written wrongly. JSON string syntax is valid TOML
    basic-string syntax."""
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    for key, value in manifest.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(key, value)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(f'{name}.{key}', value)}")
    return "\n".join(lines) + "\n"


def _toml_value(key: str, value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "[" + ", ".join(json.dumps(item, ensure_ascii=False) for item in value) + "]"
    raise BuildError(f"manifest key {key}: cannot write a {type(value).__name__} value")


def _requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    return re.sub(r"[-_.]+", "-", name.group(0) if name else requirement).lower()


def _excluded(relative: Path) -> bool:
    # Blender's default build exclusions: caches, dot-files, built zips, .blend backups.
    return (
        any(part in _EXCLUDED_PARTS or part.startswith(".") for part in relative.parts)
        or relative.suffix == ".pyc"
        or (len(relative.parts) == 1 and relative.suffix == ".zip")
        or re.search(r"\.blend\d+$", relative.name) is not None
    )


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


if __name__ == "__main__":
    sys.exit(main())
