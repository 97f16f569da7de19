"""The Godot 4 addon (clients/godot), which cannot run here (Debian has only Godot 3): its
GDScript is parsed, linted and format-checked with gdtoolkit, its wire constants and byte
offsets are held to the bridge's codec, and TetherLive is registered once."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from tether.bridge import wire

GODOT = ROOT / "clients" / "godot"
ADDON = GODOT / "addons" / "tether" / "tether_live.gd"
GDSCRIPTS = sorted(GODOT.rglob("*.gd"))
GDTOOLKIT = Path(sys.executable).parent  # gdparse, gdlint, gdformat: the dev extra


def function(source: str, name: str) -> str:
    """The body of GDScript function `name` (up to the next top-level line)."""
    start = source.index(f"\nfunc {name}(")
    end = re.search(r"\n\S", source[start + 1 :])
    return source[start : start + 1 + end.start()] if end else source[start:]


def offsets(layout: struct.Struct) -> list[int]:
    """The byte offset of each field of a little-endian struct layout."""
    codes = re.findall(r"\d*[a-zA-Z]", layout.format.lstrip("<"))
    return [struct.calcsize("<" + "".join(codes[:i])) for i in range(len(codes))]


def test_gdscript_parses_lints_and_is_formatted() -> None:
    assert {path.name for path in GDSCRIPTS} >= {"tether_live.gd", "example.gd"}
    paths = [str(path) for path in GDSCRIPTS]
    for tool in (["gdparse"], ["gdlint"], ["gdformat", "--check"]):
        done = subprocess.run(
            [str(GDTOOLKIT / tool[0]), *tool[1:], *paths], capture_output=True, text=True
        )
        assert done.returncode == 0, f"{' '.join(tool)}:\n{done.stdout}{done.stderr}"


def test_tether_live_is_registered_once() -> None:
    """`class_name` lists a node in the Create Node dialog; a plugin's add_custom_type
    would list it a second time."""
    sources = {path: path.read_text() for path in GODOT.rglob("*.gd")}
    declared = [
        path for path, text in sources.items() if re.search(r"^class_name TetherLive\b", text, re.M)
    ]
    assert declared == [ADDON]
    assert not [path for path, text in sources.items() if "add_custom_type" in text]
    assert '@icon("res://addons/tether/icon.svg")' in sources[ADDON]
    assert (ADDON.parent / "icon.svg").exists()


def test_the_addon_speaks_the_bridges_format() -> None:
    source = ADDON.read_text()
    constants = dict(re.findall(r"^const (\w+) := (0x[0-9A-Fa-f]+|\d+)\b", source, re.M))
    expected = {
        "FRAME_MAGIC": int.from_bytes(wire.FRAME_MAGIC, "little"),
        "RESULT_MAGIC": int.from_bytes(wire.RESULT_MAGIC, "little"),
        "FRAME_HEADER_SIZE": wire.FRAME_HEADER.size,
        "BUFFER_DESCRIPTOR_SIZE": wire.BUFFER_DESCRIPTOR.size,
        "RESULT_HEADER_SIZE": wire.RESULT_HEADER.size,
        "PIXEL_U8": 1,
        "PIXEL_F32": 3,
        "FORMAT_PNG": wire.RESULT_FORMATS["png"],
        "FORMAT_JPEG": wire.RESULT_FORMATS["jpeg"],
        "FORMAT_WEBP": wire.RESULT_FORMATS["webp"],
        "FORMAT_RAW": wire.RESULT_FORMATS["raw"],
    }
    assert {name: int(constants.get(name, "-1"), 0) for name in expected} == expected
    assert wire.PIXEL_TYPE_NAMES[1] == "U8" and wire.PIXEL_TYPE_NAMES[3] == "F32"

    # Where _pack_frame writes: the header's fields, then each descriptor's from `base`.
    pack = function(source, "_pack_frame")
    header = [int(n) for n in re.findall(r"message\.encode_u32\((\d+),", pack)]
    assert header == offsets(wire.FRAME_HEADER)
    descriptor = [
        int(n or 0) for n in re.findall(r"message\.encode_u32\(base(?: \+ (\d+))?,", pack)
    ]
    assert descriptor == offsets(wire.BUFFER_DESCRIPTOR)
    # Where _on_result reads: every field after the magic (the addon has no use for the
    # server latency at 24 or the flags at 32).
    read = function(source, "_on_result")
    fields = dict(
        (name, int(offset))
        for name, offset in re.findall(r"var (\w+) := packet\.decode_\w+\((\d+)\)", read)
    )
    result = dict(
        zip(
            ["magic", "frame_id", "format", "width", "height", "dropped", "latency", "lag_ms"]
            + ["flags", "length"],
            offsets(wire.RESULT_HEADER),
        )
    )
    assert fields == {name: result[name] for name in fields}
    assert set(fields) == {"frame_id", "format", "width", "height", "dropped", "lag_ms", "length"}
    assert "packet.decode_u32(0) != RESULT_MAGIC" in read


def test_the_addon_presents_the_bridge_token_in_the_handshake() -> None:
    connect = function(ADDON.read_text(), "connect_to_bridge")
    assert '_socket.handshake_headers = PackedStringArray(["Authorization: Bearer " + token])' in (
        connect
    )
    assert 'OS.get_environment("TETHER_BRIDGE_TOKEN")' in connect


@pytest.mark.parametrize("path", GDSCRIPTS, ids=lambda path: path.name)
def test_no_gdscript_cites_a_file_that_is_gone(path: Path) -> None:
    for cited in re.findall(r"\b((?:sdk|tests|protos|clients)/[\w/.-]+\.\w+)", path.read_text()):
        assert (ROOT / cited).exists(), f"{path.name} cites {cited}"
