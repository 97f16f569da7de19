"""tether_krita.bootstrap: the vendored libraries on sys.path, or a message saying why not."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from plugin_build import load_build  # noqa: E402
from tether_krita import bootstrap  # noqa: E402


def test_platform_keys_match_the_build_targets():
    assert bootstrap.platform_key("linux", "x86_64", (3, 11)) == "linux-x86_64-cp311"
    assert bootstrap.platform_key("win32", "AMD64", (3, 10)) == "windows-x86_64-cp310"
    assert bootstrap.platform_key("darwin", "arm64", (3, 10)) == "macos-arm64-cp310"
    targets = set(load_build().TARGETS)
    assert {"linux-x86_64-cp311", "windows-x86_64-cp310", "macos-arm64-cp310"} <= targets


def test_prepare_dependencies_puts_this_platforms_folder_first(tmp_path, monkeypatch):
    key = bootstrap.platform_key()
    (tmp_path / "vendor" / key).mkdir(parents=True)
    (tmp_path / "vendor" / "common").mkdir()
    (tmp_path / "vendor" / "windows-x86_64-cp310").mkdir()
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert bootstrap.prepare_dependencies(tmp_path / "vendor") is None
    assert sys.path[0] == str(tmp_path / "vendor" / key)
    assert sys.path[1] == str(tmp_path / "vendor" / "common")
    assert bootstrap.vendored_keys(tmp_path / "vendor") == sorted([key, "windows-x86_64-cp310"])


def test_a_library_that_fails_to_import_becomes_a_message(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(bootstrap, "REQUIRED", ("numpy", "tether_no_such_library"))
    message = bootstrap.prepare_dependencies(ROOT / "no-vendor-here")
    assert message is not None
    assert message.startswith("The Tether plugin cannot load tether_no_such_library")
    assert "carries no libraries" in message


def test_missing_dependency_message_says_what_to_install():
    error = ImportError("No module named 'numpy'")
    message = bootstrap.missing_message(
        "numpy", error, "linux-x86_64-cp311", ["windows-x86_64-cp310"]
    )
    assert "numpy" in message and "linux-x86_64-cp311" in message
    assert "windows-x86_64-cp310" in message and "Import Python Plugin" in message
    assert "build.py --target linux-x86_64-cp311" in message
