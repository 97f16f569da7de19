"""tether_krita.document: what a repaint reads from a Krita document (the fakes mirror
Krita's API; real Krita: tests/test_krita_real.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tether.background import UserError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from krita_fakes import FakeDocument, FakeSelection, rect_selection, rgba8_canvas  # noqa: E402
from tether_krita import document, masks  # noqa: E402
from tether_krita.geometry import Rect  # noqa: E402
from tether_krita.pixels import UnsupportedColorSpace  # noqa: E402


def test_snapshot_of_a_selection_includes_context():
    doc = FakeDocument(200, 100, rgba8_canvas(200, 100))
    doc.setSelection(rect_selection(200, 100, Rect(50, 40, 40, 20)))
    snapshot = document.take_snapshot(doc, context_percent=25)
    assert snapshot.region == Rect(40, 30, 60, 40)
    assert snapshot.pixels == doc.pixelData(40, 30, 60, 40)
    coverage = masks.selection_mask(snapshot.selection, 60, 40)
    assert coverage.sum() == 40 * 20 and coverage[10, 10] == 1 and coverage[0, 0] == 0


def test_snapshot_without_selection_is_the_whole_canvas():
    doc = FakeDocument(64, 32, rgba8_canvas(64, 32))
    snapshot = document.take_snapshot(doc, context_percent=25)
    assert snapshot.region == Rect(0, 0, 64, 32) and snapshot.selection is None


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: None, UserError, "Open an image"),
        (lambda: with_selection(np.zeros((20, 20))), UserError, "selection is empty"),
        (lambda: with_selection(ghost_selection()), UserError, "selection is empty"),
        (
            lambda: FakeDocument(4, 4, bytes(80), model="CMYKA"),
            UnsupportedColorSpace,
            "RGB and greyscale",
        ),
    ],
    ids=["no-document", "empty-selection", "transparent-selection", "cmyk"],
)
def test_snapshot_refusals_explain_themselves(make, error, words):
    with pytest.raises(error, match=words):
        document.take_snapshot(make(), context_percent=25)


def ghost_selection() -> FakeSelection:
    """A selection whose bounding box is not empty but whose pixels are all 0, as Krita
    can leave after erasing a selection mask."""
    selection = FakeSelection(np.zeros((20, 20)))
    selection._bounds = lambda: (5, 5, 4, 4)
    return selection


def with_selection(selection: np.ndarray | FakeSelection) -> FakeDocument:
    doc = FakeDocument(20, 20, rgba8_canvas(20, 20))
    if not isinstance(selection, FakeSelection):
        selection = FakeSelection(selection)
    doc.setSelection(selection)
    return doc
