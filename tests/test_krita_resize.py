"""tether_krita.resize: numpy resampling (Krita's Python has no pillow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "krita"))

from tether_krita import resize  # noqa: E402


def test_resize_keeps_flat_colour_and_averages_when_shrinking():
    flat = np.full((30, 50, 3), 0.25, dtype=np.float32)
    assert np.allclose(resize.resize(flat, 17, 9), 0.25)
    assert np.allclose(resize.resize(flat, 170, 90), 0.25)
    checker = np.indices((64, 64)).sum(axis=0) % 2  # 1-pixel checkerboard
    assert np.allclose(resize.resize(checker, 8, 8), 0.5, atol=0.02)  # no aliasing


def test_resize_upscales_smoothly_and_keeps_rank():
    ramp = np.array([[0.0, 1.0]], dtype=np.float32)
    wide = resize.resize(ramp, 8, 1)
    assert wide.shape == (1, 8)
    assert np.all(np.diff(wide[0]) >= 0) and wide[0, 0] == 0 and wide[0, -1] == 1
    same = np.random.default_rng(0).random((5, 7, 4)).astype(np.float32)
    assert np.array_equal(resize.resize(same, 7, 5), same)
