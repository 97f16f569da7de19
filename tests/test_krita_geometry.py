"""tether_krita.geometry: the region a repaint reads and the size it generates at."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "krita"))

from tether_krita.geometry import Rect, canvas_size, context_region, generation_size  # noqa: E402


def test_context_region_grows_the_selection_and_stays_on_the_canvas():
    canvas = Rect(0, 0, 400, 300)
    assert context_region(Rect(100, 100, 40, 20), canvas, 0.25) == Rect(90, 90, 60, 40)
    assert context_region(Rect(0, 280, 100, 20), canvas, 0.5) == Rect(0, 230, 150, 70)
    assert context_region(Rect(10, 10, 10, 10), canvas, 0.0) == Rect(10, 10, 10, 10)


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ((256, 256), (256, 256)),  # the model's own size
        ((4000, 3000), (296, 224)),  # a large canvas is scaled down...
        ((40, 30), (296, 224)),  # ...and a small selection up, to the trained area
        ((1000, 100), (808, 80)),  # aspect ratio kept, sides multiples of 8
        ((5000, 10), (1024, 64)),  # extreme strips hit the minimum side
    ],
)
def test_generation_size(region, expected):
    assert generation_size(*region, 256, 256) == expected


def test_generation_size_respects_the_servers_pixel_limit():
    width, height = generation_size(3000, 2000, 512, 512, max_pixels=200_000)
    assert width * height <= 200_000
    assert width % 8 == 0 and height % 8 == 0
    assert width / height == pytest.approx(1.5, rel=0.05)
    width, height = generation_size(5000, 10, 256, 256, max_pixels=64 * 200)
    assert (width, height) == (200, 64)
    with pytest.raises(ValueError, match="limit"):
        generation_size(100, 100, 256, 256, max_pixels=1000)


def test_canvas_size_keeps_the_region_and_fits_the_canvas_limit():
    assert canvas_size(4000, 3000, 4096 * 4096) == (4000, 3000)  # at full resolution
    assert canvas_size(1350, 1101, 4096 * 4096) == (1352, 1104)  # up to multiples of 8
    width, height = canvas_size(8000, 6000, 4096 * 4096)  # over the limit: scaled down
    assert width * height <= 4096 * 4096 and width % 8 == 0 and height % 8 == 0
    assert (width, height) == (4728, 3544)
