"""The bridge's codec and config messages on their own, against protos/bridge.md."""

from __future__ import annotations

import dataclasses
import io
import re
import struct

import numpy as np
import pytest
import tether
from bridge_harness import DEPTH, NORMALS, SIZE, colour, scene_frame
from conftest import ROOT
from PIL import Image
from tether import bridge
from tether.bridge import wire

WIRE_DOC = ROOT / "protos" / "bridge.md"


def test_frames_and_results_are_the_documented_bytes() -> None:
    """Built by hand at the offsets protos/bridge.md gives (the Godot addon writes them the
    same way), independently of the codec."""
    pixels, png = colour(3), io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    buffers = [  # (width, height, channels, pixel type, bytes)
        (SIZE, SIZE, 3, 1, pixels.tobytes()),
        (SIZE, SIZE, 1, 3, DEPTH.astype("<f4").tobytes()),
        (SIZE, SIZE, 3, 2, NORMALS.astype("<f2").tobytes()),
        (0, 0, 0, 0, png.getvalue()),
    ]
    header = bytearray(12 + 20 * len(buffers))
    struct.pack_into("<I", header, 0, 0x31464C54)  # "TLF1"
    struct.pack_into("<I", header, 4, 3)
    struct.pack_into("<I", header, 8, len(buffers))
    for i, (width, height, channels, pixel_type, data) in enumerate(buffers):
        for k, value in enumerate((width, height, channels, pixel_type, len(data))):
            struct.pack_into("<I", header, 12 + 20 * i + 4 * k, value)
    by_hand = bytes(header) + b"".join(buffer[4] for buffer in buffers)
    packed = bridge.pack_frame(3, [pixels, DEPTH, NORMALS.astype(np.float16), png.getvalue()])
    assert packed == by_hand

    result = tether.LiveResult(
        frame_id=7,
        format="raw",
        width=SIZE,
        height=SIZE,
        data=pixels.tobytes(),
        dropped=2,
        latency_ms=12.5,
        reused=True,
    )
    message = bridge.pack_result(result, lag_ms=20.25)
    assert message[:4] == b"TLR1" and len(message) == 40 + SIZE * SIZE * 3
    assert struct.unpack_from("<5I", message, 4) == (7, 4, SIZE, SIZE, 2)  # 4: raw
    assert struct.unpack_from("<2f", message, 24) == (12.5, 20.25)
    assert struct.unpack_from("<2I", message, 32) == (1, SIZE * SIZE * 3)  # reused, length
    assert message[40:] == pixels.tobytes()


def test_buffers_come_back_bit_for_bit_in_the_sdks_shapes() -> None:
    pixels = colour(4)
    frame_id, (image, depth, normals) = bridge.unpack_frame(scene_frame(4, pixels))
    assert frame_id == 4 and image.dtype == np.uint8 and np.array_equal(image, pixels)
    assert depth.dtype == np.float32 and np.array_equal(depth, DEPTH)  # (H, W)
    assert normals.dtype == np.float32 and np.array_equal(normals, NORMALS)
    for name in ("raw", "png", "jpeg", "webp"):  # every format a LiveResult can have
        result = tether.LiveResult(
            frame_id=1,
            format=name,
            width=0,
            height=0,
            data=b"x",
            dropped=0,
            latency_ms=0.0,
            reused=False,
        )
        assert bridge.unpack_result(bridge.pack_result(result, 0.0)).format == name


def _patched(frame: bytes, offset: int, value: int) -> bytes:
    patched = bytearray(frame)
    struct.pack_into("<I", patched, offset, value)
    return bytes(patched)


def _short_depth(frame: bytes) -> bytes:
    """Buffer 1 (depth) claims 100 bytes and the message carries exactly 100 for it."""
    colour_end = 72 + SIZE * SIZE * 3
    patched = _patched(frame, 12 + 20 + 16, 100)
    return patched[:colour_end] + bytes(100) + patched[colour_end + SIZE * SIZE * 4 :]


GOOD = scene_frame(9)
MALFORMED = [  # name, message, frame id in the error, what the error says
    ("short", b"TLF", 0, "shorter than the 12-byte header"),
    ("magic", b"TLF2" + GOOD[4:], 0, "frame.magic"),
    ("id-zero", _patched(GOOD, 4, 0), 0, "frame.id: must be 1 or more"),
    ("no-buffers", _patched(GOOD, 8, 0), 9, "frame.buffer_count: 0"),
    ("descriptors-cut", GOOD[:40], 9, "too short for the descriptors of 3 buffers"),
    ("data-cut", GOOD[:-1], 9, "the message carries"),
    ("data-extra", GOOD + b"\0", 9, "the message carries"),
    ("byte-length", _short_depth(GOOD), 9, "buffers[1] (controls[0]).data: 100 bytes, but"),
    (
        "pixel-type",
        _patched(GOOD, 12 + 20 + 12, 7),
        9,
        "buffers[1] (controls[0]).pixel_type: 7; expected 0 (encoded), 1 (U8), 2 (F16), 3 (F32)",
    ),
    ("channels", _patched(GOOD, 12 + 8, 2), 9, "buffers[0] (colour).channels: must be 1, 3"),
    (
        "not-an-image",
        wire.FRAME_HEADER.pack(b"TLF1", 9, 1)
        + wire.BUFFER_DESCRIPTOR.pack(0, 0, 0, 0, 6)
        + b"GIF89a",
        9,
        "buffers[0] (colour): pixel type 0 (encoded), but not a PNG, JPEG or WebP",
    ),
]


@pytest.mark.parametrize(
    "name, message, frame_id, expected", MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_frames_are_named(
    name: str, message: bytes, frame_id: int, expected: str
) -> None:
    with pytest.raises(bridge.ProtocolError) as error:
        bridge.unpack_frame(message)
    assert expected in str(error.value)
    assert error.value.frame_id == frame_id


def test_godot_style_numbers_and_every_preprocessor() -> None:
    """GDScript's JSON may write 2.0 for an int; every preprocessor field maps to the SDK."""
    config = bridge.config_from_json(
        {
            "prompt": "p",
            "steps": 3.0,
            "seed": 7.0,
            "width": 64.0,
            "scheduler": None,
            "controls": [
                {
                    "model": "depth",
                    "preprocessor": {
                        "type": "depth",
                        "buffer": "hardware",
                        "near": 0.1,
                        "far": 50,
                        "bottom_up": True,
                    },
                },
                {
                    "model": "normal",
                    "mode": "control",
                    "resize": "fill",
                    "preprocessor": {
                        "type": "normal",
                        "space": "world",
                        "y_down": True,
                        "legacy": True,
                        "camera_to_world": [1, 0, 0, 0, 0, 1, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1],
                    },
                },
                {
                    "model": "canny",
                    "start": 0.1,
                    "end": 0.9,
                    "weight": 1,
                    "preprocessor": {"type": "canny", "low": 50, "high": 150},
                },
                {"model": "canny", "preprocessor": {"type": "invert"}},
                {"model": "depth", "preprocessor": None},
            ],
            "loras": [{"name": "detail", "weight": 0.5}, {"name": "style"}],
        }
    )
    assert config.loras == [tether.Lora("detail", 0.5), tether.Lora("style")]
    assert (config.steps, config.seed, config.width, config.scheduler) == (3, 7, 64, None)
    assert isinstance(config.steps, int) and config.strength == tether.LiveConfig("p").strength
    depth, normal, canny, invert, plain = config.controls
    assert depth.preprocessor == tether.Depth("hardware", 0.1, 50.0, True)
    assert normal.preprocessor.y_down and normal.preprocessor.legacy
    assert normal.mode == "control" and normal.resize == "fill"
    assert np.asarray(normal.preprocessor.camera_to_world)[:3, 3].tolist() == [0, 2, 3]
    assert canny.preprocessor == tether.Canny(50, 150) and (canny.start, canny.end) == (0.1, 0.9)
    assert isinstance(canny.weight, float)
    assert isinstance(invert.preprocessor, tether.Invert) and plain.preprocessor is None
    assert all(unit.image is None for unit in config.controls)  # frames bring the images


BAD_CONFIGS = [
    ({}, "config.prompt: required"),
    ({"prompt": "p", "steps": "two"}, 'config.steps: expected an integer, got "two"'),
    ({"prompt": "p", "seed": 1.5}, "config.seed: expected an integer, got 1.5"),
    ({"prompt": "p", "steps": True}, "config.steps: expected an integer, got true"),
    ({"prompt": 3}, "config.prompt: expected a string, got 3"),
    ({"prompt": "p", "colour": 1}, "config.colour: unknown field; known: prompt, negative"),
    ({"prompt": "p", "output_format": "gif"}, "config.output_format: must be one of"),
    ({"prompt": "p", "controls": {}}, "config.controls: expected an array"),
    ({"prompt": "p", "loras": [{"weight": 1}]}, "config.loras[0].name: required"),
    ({"prompt": "p", "loras": [{"name": "a", "weight": "x"}]}, "config.loras[0].weight: expected"),
    ({"prompt": "p", "controls": [3]}, "config.controls[0]: expected an object, got 3"),
    ({"prompt": "p", "controls": [{"weight": 1}]}, "config.controls[0].model: required"),
    ({"prompt": "p", "controls": [{"model": "d", "image": 1}]}, "controls[0].image: unknown"),
    (
        {"prompt": "p", "controls": [{"model": "d", "preprocessor": {"type": "x"}}]},
        "config.controls[0].preprocessor.type: 'x'; expected one of 'depth', 'normal'",
    ),
    (
        {"prompt": "p", "controls": [{"model": "d", "preprocessor": {"type": "canny", "far": 1}}]},
        "config.controls[0].preprocessor.far: unknown field; known: low, high",
    ),
    (
        {
            "prompt": "p",
            "controls": [
                {"model": "n", "preprocessor": {"type": "normal", "camera_to_world": [1, 2, 3]}}
            ],
        },
        "config.controls[0].preprocessor.camera_to_world: expected 16 numbers (row-major 4x4)",
    ),
]


@pytest.mark.parametrize("message, expected", BAD_CONFIGS)
def test_bad_configs_name_the_field(message: dict, expected: str) -> None:
    with pytest.raises(bridge.ProtocolError, match=re.escape(expected)):
        bridge.config_from_json(message)


def test_the_wire_doc_lists_every_config_field() -> None:
    """The config's fields come from the SDK's classes: a field added there is on the wire,
    and must be in protos/bridge.md too."""
    text = WIRE_DOC.read_text()
    start = text.index("## Host -> bridge, text: the session config")
    doc = text[start : text.index("\n## ", start + 1)]
    classes = [tether.LiveConfig, tether.Control, *bridge.config.PREPROCESSORS.values()]
    fields = {field.name for cls in classes for field in dataclasses.fields(cls)} - {"image"}
    missing = sorted(name for name in fields if not re.search(rf"\b{name}\b", doc))
    assert not missing, f"protos/bridge.md does not mention {missing}"
    for kind in bridge.config.PREPROCESSORS:
        assert f'"{kind}"' in doc
    # The codes in the doc are image.proto's.
    assert wire.RESULT_FORMATS == {"png": 1, "jpeg": 2, "webp": 3, "raw": 4}
    assert wire.PIXEL_TYPE_NAMES == {0: "encoded", 1: "U8", 2: "F16", 3: "F32"}
