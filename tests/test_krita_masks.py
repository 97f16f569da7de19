"""tether_krita.masks: selection masks and the result layer's pixels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "krita"))

from tether_krita import masks  # noqa: E402


def test_layer_pixels_take_alpha_from_the_selection():
    coverage = masks.selection_mask(bytes([0, 128, 255, 0]), 2, 2)
    layer = masks.layer_pixels(np.full((16, 16, 3), 0.5, dtype=np.float32), coverage)
    assert layer.shape == (2, 2, 4)
    assert np.allclose(layer[:, :, :3], 0.5)
    assert np.allclose(layer[:, :, 3], [[0, 128 / 255], [1, 0]])
    with pytest.raises(ValueError, match="expected 4"):
        masks.selection_mask(bytes(3), 2, 2)


def test_edges_layer_is_opaque_at_region_size():
    edges = np.zeros((8, 8, 3), dtype=np.uint8)
    edges[:, 4:] = 255
    layer = masks.edges_pixels(edges, 16, 4)
    assert layer.shape == (4, 16, 4)
    assert np.all(layer[:, :, 3] == 1)
    assert layer[0, 0, 0] == 0 and layer[0, -1, 0] == 1
