"""tether_krita.controller: a repaint's events turned into layers and messages, with fakes
of Krita's document API (tests/krita/krita_fakes.py) and a stand-in server whose models
and limits are a real server's (tests/krita/fake_tether.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tether

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from fake_tether import FakeClient, served_models  # noqa: E402
from krita_fakes import FakeDocument, FakeSelection, rect_selection, rgba8_canvas  # noqa: E402
from repaint_rig import Recorder, layer_rgba, run_sync  # noqa: E402
from tether_krita import pixels  # noqa: E402
from tether_krita.controller import Outside, RepaintController  # noqa: E402
from tether_krita.geometry import Rect  # noqa: E402
from tether_krita.settings import Settings  # noqa: E402

SRGB = "sRGB-elle-V2-srgbtrc.icc"
LINEAR = "sRGB-elle-V2-g10.icc"


@pytest.fixture(scope="module")
def served(server):
    return served_models(server)


def running(client, view, is_open=lambda d: True) -> RepaintController:
    """A controller whose jobs run on their own thread, as in Krita."""
    return RepaintController(view, Outside(client_factory=lambda s: client, is_open=is_open))


def poll_until(controller, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        controller.poll()
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("depth", "profile", "model"),
    [
        ("U8", SRGB, "RGBA"),
        ("U16", SRGB, "RGBA"),
        ("F16", LINEAR, "RGBA"),
        ("F32", LINEAR, "RGBA"),
        ("U8", "Gray-D50-elle-V2-srgbtrc.icc", "GRAYA"),
    ],
)
def test_repaint_adds_one_layer_masked_to_the_selection(served, depth, profile, model):
    fmt = pixels.pixel_format(model, depth, profile)
    width, height = 160, 120
    background = np.zeros((height, width, 4), dtype=np.float32)
    background[:, :, :3], background[:, :, 3] = 0.3, 1.0
    doc = FakeDocument(width, height, pixels.encode(background, fmt), model, depth, profile)
    selected = Rect(40, 30, 60, 50)
    doc.setSelection(rect_selection(width, height, selected))

    started, view, _ = run_sync(doc, FakeClient(served, color=(200, 100, 50)))

    assert started and view.ended == [("Done: layer “a red door”, seed 7.", False)]
    assert doc.layer_names() == ["Background", "a red door"]
    assert [action for action, _ in doc.undo_log] == ["add"]  # a single undo step
    layer = layer_rgba(doc, "a red door")
    inside = np.zeros((height, width), dtype=bool)
    inside[selected.y : selected.bottom, selected.x : selected.right] = True
    assert np.all(layer[~inside, 3] == 0)  # nothing shows outside the selection
    assert np.allclose(layer[inside, 3], 1)
    expected = np.array([200, 100, 50]) / 255
    if model == "GRAYA":
        expected = np.full(3, expected @ [0.2126, 0.7152, 0.0722])
    assert np.allclose(layer[inside, :3], expected, atol=3 / 255)
    assert np.allclose(layer_rgba(doc, "Background"), background, atol=1 / 255)


def test_a_canvas_within_one_pass_is_scaled_to_the_models_size_and_back(served):
    # 700000 pixels: one pass. Over the server's max_pixels: tests/test_krita_canvas.py.
    doc = FakeDocument(1000, 700, rgba8_canvas(1000, 700))
    client = FakeClient(served, color=(0, 255, 0))
    run_sync(doc, client, Settings(prompt="grass"))
    options = client.requests[0][1]
    assert (options["width"], options["height"]) == (304, 216)
    layer = layer_rgba(doc, "grass")
    assert np.allclose(layer[:, :, 3], 1) and np.allclose(layer[:, :, :3], [0, 1, 0], atol=1e-3)


def test_show_edges_adds_a_screen_layer_of_the_edges(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    run_sync(doc, FakeClient(served), Settings(prompt="x", show_edges=True))
    assert doc.layer_names() == ["Background", "Edges: x", "x"]
    edges = next(n for n in doc.root.childNodes() if n.name() == "Edges: x")
    assert edges.blendingMode() == "screen"


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"down": True}, "Cannot reach the Tether server at 127.0.0.1:50051"),
        (
            {"reject": tether.InvalidArgument("steps: at most 150")},
            "The Tether server refused the request: steps: at most 150",
        ),
        ({"canny": None}, "no canny control model"),
    ],
    ids=["server-down", "server-refuses", "no-canny"],
)
def test_failures_leave_the_document_untouched(server, fault, words):
    models = served_models(server, canny=fault.pop("canny", "edges-v11"))
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    doc.setSelection(rect_selection(64, 64, Rect(8, 8, 16, 16)))
    before = bytes(doc.root.childNodes()[0].data)
    started, view, controller = run_sync(
        doc, FakeClient(models, **fault), Settings(show_edges=True)
    )
    [(message, is_error)] = view.ended
    assert is_error and words in message
    assert doc.layer_names() == ["Background"]
    assert bytes(doc.root.childNodes()[0].data) == before
    assert not controller.running


def test_refusals_before_the_job_start_no_job(served):
    started = []
    view = Recorder()
    outside = Outside(client_factory=lambda s: FakeClient(served), start_job=started.append)
    controller = RepaintController(view, outside)
    assert not controller.start(None, Settings())
    empty = FakeDocument(20, 20, rgba8_canvas(20, 20))
    empty.setSelection(FakeSelection(np.zeros((20, 20))))
    assert not controller.start(empty, Settings())
    assert not controller.start(FakeDocument(8, 8, rgba8_canvas(8, 8)), Settings(steps=0))
    cmyk = FakeDocument(4, 4, bytes(80), model="CMYKA")
    assert not controller.start(cmyk, Settings())
    assert started == [] and [error for _, error in view.ended] == [True] * 4
    assert "Open an image" in view.ended[0][0] and "empty" in view.ended[1][0]
    assert "Steps" in view.ended[2][0] and "Convert Image Color Space" in view.ended[3][0]
    assert empty.undo_log == []


def test_cancel_stops_the_server_job_and_removes_the_preview(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(served, hold=True)
    view = Recorder()
    controller = running(client, view)
    assert controller.start(doc, Settings(prompt="p"))
    assert controller.start(doc, Settings()) is False  # one job at a time
    assert "already running" in view.ended[-1][0]
    poll_until(controller, lambda: doc.undo_log)  # a preview made it into the layer
    assert doc.layer_names() == ["Background", "p (painting…)"]
    controller.cancel()
    poll_until(controller, lambda: not controller.running)
    assert view.ended[-1] == ("Cancelled.", False)
    assert doc.layer_names() == ["Background"]
    assert client.fake.cancelled.wait(5)  # the server saw the cancel


def test_closing_the_document_cancels_the_job_and_writes_nothing(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(served, hold=True)
    view = Recorder()
    open_documents = [doc]
    controller = running(client, view, is_open=lambda d: d in open_documents)
    controller.start(doc, Settings())
    poll_until(controller, lambda: client.messages)
    open_documents.clear()
    poll_until(controller, lambda: not controller.running)
    assert view.ended[-1] == ("Cancelled.", False)
    assert client.fake.cancelled.wait(5)


def test_previews_and_result_share_one_layer_and_one_undo_step(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    doc.setSelection(rect_selection(64, 64, Rect(16, 16, 32, 32)))
    client = FakeClient(served, hold=True)
    view = Recorder()
    controller = running(client, view)
    controller.start(doc, Settings(prompt="p"))
    poll_until(controller, lambda: doc.undo_log)
    preview = layer_rgba(doc, "p (painting…)")
    assert np.allclose(preview[16:48, 16:48, :3], 128 / 255, atol=1 / 255)
    assert np.all(preview[:16, :, 3] == 0)  # previews are masked like the result
    client.fake.released.set()
    poll_until(controller, lambda: not controller.running)
    assert view.ended[-1][1] is False, view.ended
    assert doc.layer_names() == ["Background", "p"]
    assert [action for action, _ in doc.undo_log] == ["add"]
    assert np.allclose(layer_rgba(doc, "p")[16:48, 16:48, :3], [200 / 255, 100 / 255, 50 / 255])


def test_previews_are_throttled_to_spare_krita(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    now = [0.0]
    started, view, _ = run_sync(doc, FakeClient(served), Settings(prompt="p"), clock=lambda: now[0])
    # Three previews and the result arrived in one poll.
    node = next(n for n in doc.root.childNodes() if n.name() == "p")
    assert node.writes == 1  # the result only: stale previews were skipped
    assert view.progress == [(1, 3), (2, 3), (3, 3)]
