"""tether_krita.resize: numpy resampling (Krita's Python has no pillow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

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


def dense_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The triangle filter written out as full weight matrices: the definition `resize`
    computes tap by tap."""

    def weights(size_in: int, size_out: int) -> np.ndarray:
        scale = size_in / size_out
        support = max(scale, 1.0)
        centres = (np.arange(size_out) + 0.5) * scale
        distance = np.abs(np.arange(size_in)[None, :] + 0.5 - centres[:, None]) / support
        matrix = np.clip(1.0 - distance, 0.0, None)
        return matrix / matrix.sum(axis=1, keepdims=True)

    rows = weights(image.shape[0], height) @ image.reshape(image.shape[0], -1)
    rows = rows.reshape(height, *image.shape[1:])
    return np.einsum("xw,hw...->hx...", weights(image.shape[1], width), rows)


@pytest.mark.parametrize(
    ("size", "target"),
    [((37, 53), (11, 7)), ((37, 53), (200, 90)), ((300, 400), (301, 397)), ((9, 5), (9, 40))],
)
def test_resize_reads_only_the_pixels_under_the_filter(size, target):
    image = np.random.default_rng(1).random((*size, 3))
    expected = dense_resize(image, *target)
    assert np.allclose(resize.resize(image, *target), expected, atol=1e-5)
