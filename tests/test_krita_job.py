"""tether_krita.job: one repaint as a tether.background job, against a stand-in server
(tests/krita/fake_tether.py) whose models and limits are a real server's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tether
from tether import background
from tether.background import UserError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from fake_tether import FakeClient, served_models  # noqa: E402
from krita_fakes import FakeDocument, rect_selection, rgba8_canvas  # noqa: E402
from tether_krita import document  # noqa: E402
from tether_krita.geometry import Rect  # noqa: E402
from tether_krita.job import EdgesReady, PreviewReady, Snapshot, prepare, repaint_job  # noqa: E402
from tether_krita.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def served(server):
    return served_models(server)


def snapshot_of(doc: FakeDocument, context: int = 25) -> Snapshot:
    return document.take_snapshot(doc, context_percent=context)


def run_job(client: FakeClient, snapshot: Snapshot, settings: Settings) -> list:
    job = repaint_job(client, snapshot, settings)
    job.run()
    return job.poll()


def test_prepare_scales_image_and_mask_to_the_generation_size(served):
    doc = FakeDocument(400, 300, rgba8_canvas(400, 300))
    doc.setSelection(rect_selection(400, 300, Rect(100, 100, 160, 80)))
    plan = prepare(snapshot_of(doc), Settings(), FakeClient(served).models())
    assert (plan.width, plan.height) == (312, 208)  # 240x160 region -> 256^2 area
    assert plan.image.shape == (208, 312, 3) and plan.image.dtype == np.uint8
    assert plan.mask.shape == (208, 312) and plan.mask.dtype == np.uint8
    assert plan.mask[104, 156] == 255 and plan.mask[2, 2] == 0
    assert plan.canny_model == "edges-v11"  # found by kind, not by name


def test_prepare_refuses_a_server_without_canny_or_an_unknown_model(server, served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    without_canny = FakeClient(served_models(server, canny=None)).models()
    with pytest.raises(UserError, match="canny"):
        prepare(snapshot_of(doc), Settings(), without_canny)
    with pytest.raises(UserError, match="no model named 'sdxl'.*tiny"):
        prepare(snapshot_of(doc), Settings(model="sdxl"), FakeClient(served).models())


def test_job_sends_an_inpaint_request_with_a_server_side_canny_unit(served):
    doc = FakeDocument(128, 128, rgba8_canvas(128, 128))
    doc.setSelection(rect_selection(128, 128, Rect(32, 32, 64, 64)))
    client = FakeClient(served)
    settings = Settings(
        prompt="a cat", seed=9, steps=12, strength=0.6, edge_weight=0.7, edge_low=40
    )
    events = run_job(client, snapshot_of(doc), settings)

    assert client.preprocessed == []  # edges are only fetched to be shown
    [(prompt, request)] = client.requests
    assert prompt == "a cat"
    assert request["init_image"].shape == (256, 256, 3)
    assert request["mask"].shape == (256, 256)
    assert request["mask"][128, 128] == 255 and request["mask"][3, 3] == 0
    [unit] = request["controls"]
    assert unit.model == "edges-v11" and unit.weight == pytest.approx(0.7)
    assert unit.preprocessor == tether.Canny(low=40, high=200)
    assert unit.image is request["init_image"]  # the server finds the edges in it
    assert request["seed"] == 9 and request["steps"] == 12 and request["strength"] == 0.6
    assert request["preview"] == "fast" and request["model"] is None
    # What went over the wire, as the server received it.
    [message] = client.messages
    assert message.HasField("mask") and not message.HasField("mask_blur")  # server default
    assert message.controls[0].canny.low == 40 and message.controls[0].canny.high == 200
    assert (message.width, message.height) == (256, 256)
    assert client.closed
    assert isinstance(events[-1], background.Done) and events[-1].value.seed == 7
    assert sum(isinstance(e, PreviewReady) for e in events) == 3


def test_job_fetches_the_edge_map_only_to_show_it(served):
    doc = FakeDocument(100, 60, rgba8_canvas(100, 60))
    client = FakeClient(served)
    settings = Settings(show_edges=True, edge_low=10, edge_high=90)
    events = run_job(client, snapshot_of(doc), settings)
    [(control, size)] = client.preprocessed
    [(_, request)] = client.requests
    assert control is request["controls"][0]  # the very unit Generate gets
    assert size == {"width": None, "height": None}  # at the image's size: the request's
    [edges] = [e for e in events if isinstance(e, EdgesReady)]
    assert len(edges.pixels) == 100 * 60 * 4  # at the region's size, in document bytes


def test_job_random_seed_is_left_to_the_server(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(served)
    run_job(client, snapshot_of(doc), Settings())
    assert client.requests[0][1]["seed"] is None
    assert not client.messages[0].HasField("seed")


def test_job_turns_server_errors_into_one_failed_event(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(served, down=True)
    events = run_job(client, snapshot_of(doc), Settings(address="gpu:1"))
    [failed] = [e for e in events if isinstance(e, background.Failed)]
    assert failed is events[-1] and failed.code == "UNAVAILABLE"
    assert "gpu:1" in failed.message and "the Tether docker" in failed.message
    assert client.closed


def test_a_cancel_before_the_request_sends_nothing(served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(served)
    job = repaint_job(client, snapshot_of(doc), Settings(show_edges=True))
    job.cancel()
    job.run()
    assert job.poll()[-1] == background.Stopped()
    assert client.requests == [] and client.preprocessed == [] and client.closed
