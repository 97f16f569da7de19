"""Build the Tether plugin for Krita: one zip per platform, with its libraries vendored.

Krita's embedded Python cannot pip-install, so each zip carries the Tether SDK (pure
Python, `vendor/common`) and the compiled wheels of the SDK's dependencies (grpcio,
protobuf, numpy, as pyproject.toml lists them) for one platform and Python version,
unpacked into `vendor/<platform key>` (see tether_krita/bootstrap.py, which puts them on
sys.path inside Krita). Wheels come from the package index through `pip download
--only-binary=:all: --platform ... --python-version ...` and are cached, so a rebuild
works offline.

    python clients/krita/build.py --out dist/                        # every platform
    python clients/krita/build.py --target linux-x86_64-cp311 --out dist/
    python clients/krita/build.py --target linux-x86_64-cp311 --unpacked DIR   # no zip

Which Python does each Krita run? Debian 12's Krita 5.1 uses the system Python 3.11,
Ubuntu 24.04's Krita 5.2 Python 3.12; Krita 5.2's own builds (Windows installer, Linux
AppImage, macOS dmg) bundle Python 3.10.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import tomllib  # build.py runs on Python 3.11+; the plugin it builds runs on 3.10+

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = HERE / "tether_krita"
DESKTOP = HERE / "tether_krita.desktop"
README = HERE / "README.md"
SDK = ROOT / "sdk" / "tether"
PYPROJECT = ROOT / "pyproject.toml"
DEFAULT_CACHE = HERE / "build"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "vendor")
# Left out of the vendored wheels; the words go into the vendor folder's stamp, so that
# changing them unpacks the wheels again.
_TEST_FOLDER = "tests"
_TEST_CONFIG = "conftest.py"
_LEFT_OUT = f"left out: {_TEST_FOLDER}/ folders, {_TEST_CONFIG}"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold


@dataclass(frozen=True)
class Target:
    """One platform key (as bootstrap.platform_key computes it inside Krita) and the pip
    platform tags its wheels may carry. pip widens a macOS tag to older macOS versions
    and universal2 by itself, but takes manylinux tags literally: list each one."""

    key: str
    python: str  # "3.11"
    platforms: tuple[str, ...]

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")


# glibc 2.28 covers every distribution that packages Krita 5 (Debian 12: 2.36).
_MANYLINUX_X86_64 = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

TARGETS = {
    target.key: target
    for target in (
        Target("linux-x86_64-cp311", "3.11", _MANYLINUX_X86_64),
        Target("linux-x86_64-cp312", "3.12", _MANYLINUX_X86_64),
        Target("linux-x86_64-cp310", "3.10", _MANYLINUX_X86_64),
        Target("windows-x86_64-cp310", "3.10", ("win_amd64",)),
        Target("macos-arm64-cp310", "3.10", ("macosx_11_0_arm64",)),
        # grpcio ships macOS wheels for 11.0+ only (universal2).
        Target("macos-x86_64-cp310", "3.10", ("macosx_11_0_x86_64",)),
    )
}


def project() -> tuple[str, list[str]]:
    """(version, runtime requirements) of the tether distribution."""
    data = tomllib.loads(PYPROJECT.read_text())
    return data["project"]["version"], list(data["project"]["dependencies"])


def fetch_wheels(target: Target, cache: Path, requirements: list[str]) -> Path:
    """Download the wheels of `requirements` for `target` into a cache folder (reusing
    what is there, offline if it suffices) and return the folder."""
    wheels = cache / "wheels" / target.key
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        target.python,
        "--implementation",
        "cp",
        "--abi",
        target.abi,
        "--dest",
        str(wheels),
    ]
    for tag in target.platforms:
        command += ["--platform", tag]
    offline = [*command, "--no-index", "--find-links", str(wheels), *requirements]
    if subprocess.run(offline, capture_output=True).returncode != 0:
        subprocess.run([*command, *requirements], check=True)
    return wheels


def vendor_target(target: Target, cache: Path, requirements: list[str]) -> Path:
    """The unpacked wheels of `target` (cache/vendor/<key>), rebuilt when the set of
    wheels, or what is left out of them, changed."""
    wheels = fetch_wheels(target, cache, requirements)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    folder = cache / "vendor" / target.key
    stamp = folder / ".wheels"
    contents = "\n".join([*names, _LEFT_OUT])
    if stamp.is_file() and stamp.read_text() == contents:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    unpack_wheels([wheels / name for name in _newest_per_project(names)], folder)
    stamp.write_text(contents)
    return folder


def unpack_wheels(wheels: list[Path], folder: Path) -> None:
    """Unpack `wheels` into `folder`, without their own test suites (`tests` folders,
    `conftest.py`: numpy alone carries about 500 files of them) that the plugin never runs."""
    for path in wheels:
        with zipfile.ZipFile(path) as wheel:
            for member in wheel.infolist():
                parts = member.filename.split("/")
                if _TEST_FOLDER not in parts[:-1] and parts[-1] != _TEST_CONFIG:
                    wheel.extract(member, folder)


def _newest_per_project(names: list[str]) -> list[str]:
    """The cache may hold older versions from earlier builds: unpack only the ones pip
    chose now, i.e. the highest version of each project."""
    from packaging.version import Version

    best: dict[str, tuple[Version, str]] = {}
    for name in names:
        project_name, version = name.split("-")[:2]
        parsed = Version(version)
        if project_name not in best or parsed > best[project_name][0]:
            best[project_name] = (parsed, name)
    return sorted(name for _, name in best.values())


def assemble(dest: Path, vendors: dict[str, Path], link: bool = False) -> Path:
    """Write the plugin tree into `dest`: the .desktop file, the package, the SDK in
    vendor/common and each platform's libraries in vendor/<key> (symlinked when `link`,
    for tests that must not copy 60 MB per run). Returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DESKTOP, dest / DESKTOP.name)
    package = dest / PACKAGE.name
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(PACKAGE, package, ignore=_SKIP)
    if README.is_file():
        shutil.copy2(README, package / "README.md")
    shutil.copytree(SDK, package / "vendor" / "common" / "tether", ignore=_SKIP)
    for key, folder in vendors.items():
        target = package / "vendor" / key
        if link:
            target.symlink_to(folder.resolve(), target_is_directory=True)
        else:
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".wheels"))
    return dest


def make_zip(tree: Path, path: Path) -> Path:
    """Zip a plugin tree the way Krita's "Import Python Plugin from File" expects: the
    .desktop file and the package folder at the top level. Reproducible: entries in name
    order with a fixed date and mode, so two builds of the same files are the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {file.relative_to(tree).as_posix(): file for file in tree.rglob("*") if file.is_file()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, _ZIP_DATE)
            info.create_system = 3  # Unix, whichever system builds it
            info.external_attr = 0o644 << 16  # rw-r--r--
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name].read_bytes())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        action="append",
        choices=sorted(TARGETS),
        help="platform key to build (repeatable; default: all)",
    )
    parser.add_argument("--out", type=Path, help="folder for the zips")
    parser.add_argument("--unpacked", type=Path, help="write the plugin tree here (one target)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache")
    args = parser.parse_args(argv)
    if (args.out is None) == (args.unpacked is None):
        parser.error("give exactly one of --out and --unpacked")
    keys = args.target or sorted(TARGETS)
    if args.unpacked is not None and len(keys) != 1:
        parser.error("--unpacked builds exactly one --target")

    version, requirements = project()
    for key in keys:
        vendor = vendor_target(TARGETS[key], args.cache, requirements)
        if args.unpacked is not None:
            assemble(args.unpacked, {key: vendor})
            print(args.unpacked)
            continue
        staging = args.cache / "staging" / key
        if staging.exists():
            shutil.rmtree(staging)
        assemble(staging, {key: vendor})
        print(make_zip(staging, args.out / f"tether-krita-{version}-{key}.zip"))
        shutil.rmtree(staging)
    return 0


if __name__ == "__main__":
    sys.exit(main())
