"""tether_krita.pixels: Krita's pixel bytes <-> float RGBA, per colour model and depth."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "krita"))

from tether_krita import pixels  # noqa: E402
from tether_krita.pixels import PixelFormat, UnsupportedColorSpace  # noqa: E402

SRGB = "sRGB-elle-V2-srgbtrc.icc"
LINEAR = "sRGB-elle-V2-g10.icc"
FORMATS = [
    PixelFormat("RGBA", "U8", False),
    PixelFormat("RGBA", "U16", False),
    PixelFormat("RGBA", "U16", True),
    PixelFormat("RGBA", "F16", True),
    PixelFormat("RGBA", "F32", True),
    PixelFormat("RGBA", "F32", False),
    PixelFormat("GRAYA", "U8", False),
    PixelFormat("GRAYA", "F32", True),
]


def test_u8_documents_are_bgra():
    rgba = pixels.decode(bytes([10, 20, 30, 255]), 1, 1, PixelFormat("RGBA", "U8", False))
    assert np.allclose(rgba[0, 0], [30 / 255, 20 / 255, 10 / 255, 1.0])
    out = pixels.encode(np.array([[[1.0, 0.5, 0.0, 1.0]]]), PixelFormat("RGBA", "U8", False))
    assert out == bytes([0, 128, 255, 255])


def test_u16_is_bgra_and_float_is_rgba():
    u16 = struct.pack("<4H", 0, 32768, 65535, 65535)  # B, G, R, A
    rgba = pixels.decode(u16, 1, 1, PixelFormat("RGBA", "U16", False))
    assert np.allclose(rgba[0, 0], [1.0, 32768 / 65535, 0.0, 1.0])
    f32 = struct.pack("<4f", 1.0, 0.5, 0.0, 1.0)  # R, G, B, A
    rgba = pixels.decode(f32, 1, 1, PixelFormat("RGBA", "F32", False))
    assert np.allclose(rgba[0, 0], [1.0, 0.5, 0.0, 1.0])
    f16 = np.array([1.0, 0.5, 0.0, 1.0], dtype="<f2").tobytes()
    rgba = pixels.decode(f16, 1, 1, PixelFormat("RGBA", "F16", False))
    assert np.allclose(rgba[0, 0], [1.0, 0.5, 0.0, 1.0])


def test_linear_profiles_are_encoded_to_srgb_for_the_model():
    linear = struct.pack("<4f", 0.2140, 0.0, 1.0, 0.5)  # linear 0.214 = sRGB 0.5
    rgba = pixels.decode(linear, 1, 1, PixelFormat("RGBA", "F32", True))
    assert np.allclose(rgba[0, 0], [0.5, 0.0, 1.0, 0.5], atol=1e-3)
    back = struct.unpack("<4f", pixels.encode(rgba, PixelFormat("RGBA", "F32", True)))
    assert np.allclose(back, [0.2140, 0.0, 1.0, 0.5], atol=1e-4)


def test_profile_names_decide_linearity():
    assert pixels.pixel_format("RGBA", "F32", LINEAR).linear
    assert pixels.pixel_format("RGBA", "F16", "scRGB (linear)").linear
    assert not pixels.pixel_format("RGBA", "U8", SRGB).linear
    assert not pixels.pixel_format("GRAYA", "U16", "Gray-D50-elle-V2-srgbtrc.icc").linear
    with pytest.raises(UnsupportedColorSpace, match="Convert Image Color Space"):
        pixels.pixel_format("CMYKA", "U8", "")


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.model}-{f.depth}-{f.linear}")
def test_encode_then_decode_round_trips(fmt):
    rng = np.random.default_rng(1)
    rgba = rng.random((3, 5, 4)).astype(np.float32)
    if fmt.model == "GRAYA":
        rgba[:, :, 1] = rgba[:, :, 2] = rgba[:, :, 0]
    data = pixels.encode(rgba, fmt)
    assert len(data) == 3 * 5 * fmt.bytes_per_pixel
    tolerance = {"U8": 2.5 / 255, "U16": 1e-4, "F16": 2e-3, "F32": 1e-5}[fmt.depth]
    assert np.allclose(pixels.decode(data, 5, 3, fmt), rgba, atol=tolerance)


def test_hdr_and_nan_values_are_clipped_not_propagated():
    data = struct.pack("<8f", 4.0, float("nan"), -1.0, 1.0, float("inf"), 0.5, 0.5, 2.0)
    rgba = pixels.decode(data, 2, 1, PixelFormat("RGBA", "F32", False))
    assert np.all(np.isfinite(rgba)) and rgba.min() >= 0 and rgba.max() <= 1
    assert np.allclose(rgba[0, 0], [1.0, 0.0, 0.0, 1.0])


def test_flatten_puts_transparency_on_white_paper():
    rgba = np.array([[[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.5]]])
    assert np.allclose(pixels.flatten(rgba), [[[1, 1, 1], [1, 0, 0], [0.5, 0.5, 0.5]]])
