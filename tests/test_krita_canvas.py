"""Large canvases, seamless tiling and LoRAs in the Krita plugin's repaints, against the
stand-in server (tests/krita/fake_tether.py), whose models and limits are a real
server's (`tether serve` defaults: one pass up to 1048576 pixels, a canvas in tiles up to
16777216). In real Krita against a real server: tests/test_krita_real.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tether
from tether import background
from tether._proto.tether.v1 import tether_pb2
from tether.background import UserError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from fake_tether import FakeClient, served_models  # noqa: E402
from krita_fakes import FakeDocument, rect_selection, rgba8_canvas  # noqa: E402
from repaint_rig import layer_rgba, run_sync  # noqa: E402
from tether_krita import document, pixels  # noqa: E402
from tether_krita.geometry import Rect  # noqa: E402
from tether_krita.job import layer_bytes, prepare, repaint_job  # noqa: E402
from tether_krita.settings import Settings  # noqa: E402

# A selection whose region (plus the default 25 % context, clipped to the canvas) is
# 1350 x 1100 = 1485000 pixels: over the one-pass limit, sent as 1352 x 1104.
CANVAS = (1400, 1100)
SELECTED = Rect(100, 100, 1000, 800)
REGION = Rect(0, 0, 1350, 1100)


@pytest.fixture(scope="module")
def served(server):
    return served_models(server, loras=("detail", "ink"))


def large_document() -> FakeDocument:
    doc = FakeDocument(*CANVAS, rgba8_canvas(*CANVAS))
    doc.setSelection(rect_selection(*CANVAS, SELECTED))
    return doc


def test_a_region_over_the_one_pass_limit_is_sent_at_full_resolution(served):
    doc = large_document()
    client = FakeClient(served, color=(0, 255, 0))
    _, view, _ = run_sync(doc, client, Settings(prompt="moss"))

    [(_, request)] = client.requests
    assert (request["width"], request["height"]) == (1352, 1104)  # not squeezed to 512^2
    image, mask = request["init_image"], request["mask"]
    # The region's own pixels, unresampled (the canvas is B, G, R = x, y, x + y mod 256),
    # then its last column and row repeated up to multiples of 8, outside the mask.
    ys, xs = np.mgrid[0 : REGION.height, 0 : REGION.width]
    expected = np.stack([(xs + ys) % 256, ys % 256, xs % 256], axis=2)
    assert np.array_equal(image[: REGION.height, : REGION.width], expected)
    assert np.array_equal(image[:, REGION.width :], np.repeat(image[:, -3:-2], 2, axis=1))
    assert mask[:, REGION.width :].max() == 0 and mask[REGION.height :].max() == 0
    assert mask[500, 500] == 255 and mask[50, 50] == 0
    assert request["controls"][0].image is image  # edges found in the full-size image
    [message] = client.messages
    assert (message.init_image.raw.width, message.init_image.raw.height) == (1352, 1104)
    assert not message.HasField("upscale") and message.tile_size == 0  # the server's tiles

    [(text, is_error)] = view.ended
    assert not is_error
    assert text == (
        "Done: layer “moss”, seed 7. Sent at full resolution, 1350×1100, refined in tiles."
    )
    assert "Sending the request… Sent at full resolution" in " ".join(view.statuses)
    layer = layer_rgba(doc, "moss")
    inside = np.zeros(CANVAS[::-1], dtype=bool)
    inside[SELECTED.y : SELECTED.bottom, SELECTED.x : SELECTED.right] = True
    assert np.all(layer[~inside, 3] == 0) and np.all(layer[inside, 3] == 1)
    assert np.allclose(layer[inside, :3], [0, 1, 0])


def test_the_result_is_cut_from_the_padding_without_resampling(served):
    snapshot = document.take_snapshot(large_document(), context_percent=25)
    plan = prepare(snapshot, Settings(), FakeClient(served).models())
    assert plan.content == (REGION.width, REGION.height)
    noise = np.random.default_rng(0).integers(0, 256, (plan.height, plan.width, 3), np.uint8)
    layer = pixels.decode(layer_bytes(noise, plan, snapshot.fmt), 1350, 1100, snapshot.fmt)
    inside = plan.coverage == 1
    got = np.rint(layer[:, :, :3] * 255).astype(np.uint8)
    assert np.array_equal(got[inside], noise[: REGION.height, : REGION.width][inside])


def test_over_the_canvas_limit_the_region_is_scaled_down_and_the_user_told(server):
    # As `tether serve --max-canvas-pixels 1200000` answers.
    models = served_models(server, loras=())
    models.limits.max_canvas_pixels = 1_200_000
    client = FakeClient(models)
    _, view, _ = run_sync(large_document(), client, Settings(prompt="moss"))
    width, height = client.requests[0][1]["width"], client.requests[0][1]["height"]
    assert width * height <= 1_200_000 and width * height > 1_048_576
    assert width % 8 == 0 and height % 8 == 0
    assert width / height == pytest.approx(1350 / 1100, rel=0.02)
    assert view.ended == [
        (
            f"Done: layer “moss”, seed 7. Sent at {width}×{height}, scaled down from "
            "1350×1100: the server refines canvases of at most 1200000 pixels.",
            False,
        )
    ]


def test_smaller_regions_and_live_frames_keep_the_models_size(served):
    models = FakeClient(served).models()
    snapshot = document.take_snapshot(large_document(), context_percent=25)
    live_plan = prepare(snapshot, Settings(), models, tiles=False)
    assert live_plan.width * live_plan.height <= 256 * 256 and live_plan.note == ""
    small = FakeDocument(900, 900, rgba8_canvas(900, 900))  # 810000 pixels: one pass
    plan = prepare(document.take_snapshot(small, 25), Settings(), models)
    assert (plan.width, plan.height) == (256, 256) and plan.note == ""


def test_tiling_reads_the_whole_canvas_and_is_sent(served):
    doc = FakeDocument(200, 120, rgba8_canvas(200, 120))
    doc.setSelection(rect_selection(200, 120, Rect(150, 40, 50, 40)))  # at the seam
    client = FakeClient(served)
    run_sync(doc, client, Settings(prompt="tiles", tiling="x", context_percent=0))
    [(_, request)] = client.requests
    assert request["tiling"] == "x"
    assert client.messages[0].tiling == tether_pb2.TILING_X
    # The whole canvas, so that the server sees the edges that must meet; only the
    # selection changes.
    assert request["width"] / request["height"] == pytest.approx(200 / 120, rel=0.05)
    mask = request["mask"]
    assert mask[:, : mask.shape[1] // 2].max() == 0 and mask.max() == 255
    layer = layer_rgba(doc, "tiles")
    assert layer[:, :150, 3].max() == 0 and layer[40:80, 150:, 3].min() == 1


def test_a_tiled_large_canvas_is_stretched_to_multiples_of_8_not_padded(served):
    snapshot = document.take_snapshot(large_document(), 25, whole_canvas=True)
    assert snapshot.region == Rect(0, 0, *CANVAS)
    plan = prepare(snapshot, Settings(tiling="xy"), FakeClient(served).models())
    # 1400 x 1100 -> 1400 x 1104: padding would sit between edges that must meet.
    assert (plan.width, plan.height) == (1400, 1104) and plan.content == (1400, 1104)


def test_loras_are_sent_and_unknown_ones_refused(server, served):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(served)
    loras = (tether.Lora("detail", 0.6), tether.Lora("ink", -0.5))
    run_sync(doc, client, Settings(prompt="x", loras=loras))
    assert client.requests[0][1]["loras"] == loras
    sent = [(lora.name, round(lora.weight, 3)) for lora in client.messages[0].loras]
    assert sent == [("detail", 0.6), ("ink", -0.5)]

    unknown = FakeClient(served)
    settings = Settings(loras=(tether.Lora("sketchy"),))
    job = repaint_job(unknown, document.take_snapshot(doc, 25), settings)
    job.run()
    [failed] = [e for e in job.poll() if isinstance(e, background.Failed)]
    assert failed.message == (
        "The Tether server has no LoRA named 'sketchy' (it has: detail, ink). "
        "Pick one in the Tether docker."
    )
    assert unknown.requests == []
    without = FakeClient(served_models(server)).models()
    with pytest.raises(UserError, match=r"it has: none\)"):
        prepare(document.take_snapshot(doc, 25), settings, without)
