"""clients/krita/build.py: the plugin zip's layout, its reproducibility, and the vendored
wheels without their test suites. The zip in real Krita: tests/test_krita_real.py."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from plugin_build import load_build  # noqa: E402

KEY = "linux-x86_64-cp311"


def fake_libraries(folder: Path) -> Path:
    """An unpacked vendor folder as vendor_target leaves it."""
    (folder / "numpy").mkdir(parents=True)
    (folder / "numpy" / "__init__.py").write_text("")
    (folder / ".wheels").write_text("numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    return folder


def test_build_lays_out_the_zip_as_krita_imports_it(tmp_path):
    build = load_build()
    tree = build.assemble(tmp_path / "tree", {KEY: fake_libraries(tmp_path / "libraries")})
    archive = build.make_zip(tree, tmp_path / "dist" / "plugin.zip")
    names = set(zipfile.ZipFile(archive).namelist())
    assert "tether_krita.desktop" in names
    assert "tether_krita/__init__.py" in names and "tether_krita/README.md" in names
    assert "tether_krita/vendor/common/tether/__init__.py" in names
    assert "tether_krita/vendor/common/tether/background.py" in names
    assert "tether_krita/vendor/common/tether/_proto/tether/v1/tether_pb2.py" in names
    assert f"tether_krita/vendor/{KEY}/numpy/__init__.py" in names
    assert not any("__pycache__" in name or name.endswith(".wheels") for name in names)
    desktop = (tree / "tether_krita.desktop").read_text()
    assert "X-KDE-Library=tether_krita" in desktop


def test_two_builds_of_the_same_files_are_the_same_bytes(tmp_path):
    build = load_build()
    libraries = fake_libraries(tmp_path / "libraries")
    first = build.make_zip(build.assemble(tmp_path / "a", {KEY: libraries}), tmp_path / "a.zip")
    later = build.assemble(tmp_path / "b", {KEY: libraries})
    for file in later.rglob("*"):  # as a checkout or a build a day later leaves them
        os.utime(file, (1_900_000_000, 1_900_000_000))
    second = build.make_zip(later, tmp_path / "b.zip")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_vendored_wheels_leave_their_test_suites_out(tmp_path):
    wheel = tmp_path / "numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in (
            "numpy/__init__.py",
            "numpy/conftest.py",
            "numpy/tests/test_numpy_version.py",
            "numpy/_core/tests/data/umath-validation-set-README.txt",
            "numpy/testing/__init__.py",  # numpy.testing is public API: it stays
            "numpy/testing/tests/test_utils.py",
            "numpy-2.0.dist-info/RECORD",
        ):
            archive.writestr(name, "")
    load_build().unpack_wheels([wheel], tmp_path / "vendor")
    unpacked = sorted(
        p.relative_to(tmp_path / "vendor").as_posix()
        for p in (tmp_path / "vendor").rglob("*")
        if p.is_file()
    )
    assert unpacked == [
        "numpy-2.0.dist-info/RECORD",
        "numpy/__init__.py",
        "numpy/testing/__init__.py",
    ]
