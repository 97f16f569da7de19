"""The Krita plugin's logic (clients/krita/tether_krita) with small fakes of Krita's API
and of a Tether client: geometry, pixel formats, masks, settings, the worker job and the
controller that turns its events into layers. Real Krita: tests/test_krita_real.py."""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tether

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from krita_fakes import FakeClient, FakeDocument, FakeSelection, tiny_models  # noqa: E402
from tether_krita import bootstrap, document, masks, messages, pixels, resize  # noqa: E402
from tether_krita import settings as plugin_settings  # noqa: E402
from tether_krita.controller import RepaintController  # noqa: E402
from tether_krita.geometry import Rect, context_region, generation_size  # noqa: E402
from tether_krita.job import (  # noqa: E402
    EdgesReady,
    Failed,
    Finished,
    PreviewReady,
    RepaintJob,
    Snapshot,
    prepare,
)
from tether_krita.messages import UserError  # noqa: E402
from tether_krita.pixels import PixelFormat, UnsupportedColorSpace  # noqa: E402
from tether_krita.settings import Settings  # noqa: E402

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


# --- geometry ---------------------------------------------------------------------------


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


# --- resampling -------------------------------------------------------------------------


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


# --- pixel formats ----------------------------------------------------------------------


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


# --- masks ------------------------------------------------------------------------------


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


# --- settings and messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"address": " "}, "address"),
        ({"strength": 0.0}, "Strength"),
        ({"edge_weight": 3.0}, "Edge weight"),
        ({"edge_low": 210}, "thresholds"),
        ({"steps": 0}, "Steps"),
        ({"seed": -5}, "Seed"),
    ],
)
def test_settings_problems_are_explained(change, words):
    assert Settings().problem() is None
    problem = Settings(**change).problem()
    assert problem is not None and words in problem


def test_settings_persist_through_krita_string_store():
    store: dict[tuple[str, str], str] = {}
    chosen = Settings(prompt="a red door", seed=42, show_edges=True, strength=0.5)
    plugin_settings.save(chosen, lambda group, name, value: store.update({(group, name): value}))
    assert all(isinstance(value, str) for value in store.values())
    loaded = plugin_settings.load(lambda group, name, default: store.get((group, name), default))
    assert loaded == chosen
    store[("tether_krita", "steps")] = "many"  # a hand-edited kritarc
    assert plugin_settings.load(lambda g, n, d: store.get((g, n), d)).steps == 20


def test_layer_names_come_from_the_prompt():
    assert Settings(prompt="  a red\n door ").layer_name == "a red door"
    assert Settings(prompt="").layer_name == "Tether repaint"
    long_name = Settings(prompt="word " * 40).layer_name
    assert len(long_name) <= plugin_settings.LAYER_NAME_LENGTH and long_name.endswith("…")


def test_errors_become_sentences():
    address = "10.0.0.2:50051"
    down = messages.describe(tether.Unavailable("connection refused"), address)
    assert address in down and "running" in down
    assert "token" in messages.describe(tether.Unauthenticated("no"), address)
    rejected = messages.describe(tether.InvalidArgument("steps: must be at most 150"), address)
    assert "rejected" in rejected and "steps" in rejected
    assert messages.describe(UserError("Select something."), address) == "Select something."
    assert "ZeroDivisionError" in messages.describe(ZeroDivisionError("x"), address)


# --- bootstrap --------------------------------------------------------------------------


def test_platform_keys_match_the_build_targets():
    assert bootstrap.platform_key("linux", "x86_64", (3, 11)) == "linux-x86_64-cp311"
    assert bootstrap.platform_key("win32", "AMD64", (3, 10)) == "windows-x86_64-cp310"
    assert bootstrap.platform_key("darwin", "arm64", (3, 10)) == "macos-arm64-cp310"
    build = _load_build()
    assert {"linux-x86_64-cp311", "windows-x86_64-cp310", "macos-arm64-cp310"} <= set(build.TARGETS)


def test_prepare_dependencies_puts_this_platforms_folder_first(tmp_path, monkeypatch):
    key = bootstrap.platform_key()
    (tmp_path / "vendor" / key).mkdir(parents=True)
    (tmp_path / "vendor" / "common").mkdir()
    (tmp_path / "vendor" / "windows-x86_64-cp310").mkdir()
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert bootstrap.prepare_dependencies(tmp_path / "vendor") is None
    assert sys.path[0] == str(tmp_path / "vendor" / key)
    assert sys.path[1] == str(tmp_path / "vendor" / "common")
    assert bootstrap.vendored_keys(tmp_path / "vendor") == sorted([key, "windows-x86_64-cp310"])


def test_a_library_that_fails_to_import_becomes_a_message(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(bootstrap, "REQUIRED", ("numpy", "tether_no_such_library"))
    message = bootstrap.prepare_dependencies(ROOT / "no-vendor-here")
    assert message is not None
    assert message.startswith("The Tether plugin cannot load tether_no_such_library")
    assert "carries no libraries" in message


def test_build_lays_out_the_zip_as_krita_imports_it(tmp_path):
    build = _load_build()
    libraries = tmp_path / "libraries"
    (libraries / "numpy").mkdir(parents=True)
    (libraries / "numpy" / "__init__.py").write_text("")
    (libraries / ".wheels").write_text("numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    tree = build.assemble(tmp_path / "tree", {"linux-x86_64-cp311": libraries})
    archive = build.make_zip(tree, tmp_path / "dist" / "plugin.zip")
    import zipfile

    names = set(zipfile.ZipFile(archive).namelist())
    assert "tether_krita.desktop" in names
    assert "tether_krita/__init__.py" in names and "tether_krita/README.md" in names
    assert "tether_krita/vendor/common/tether/__init__.py" in names
    assert "tether_krita/vendor/common/tether/_proto/tether/v1/tether_pb2.py" in names
    assert "tether_krita/vendor/linux-x86_64-cp311/numpy/__init__.py" in names
    assert not any("__pycache__" in name or name.endswith(".wheels") for name in names)
    desktop = (tree / "tether_krita.desktop").read_text()
    assert "X-KDE-Library=tether_krita" in desktop


def test_missing_dependency_message_says_what_to_install():
    error = ImportError("No module named 'numpy'")
    message = bootstrap.missing_message(
        "numpy", error, "linux-x86_64-cp311", ["windows-x86_64-cp310"]
    )
    assert "numpy" in message and "linux-x86_64-cp311" in message
    assert "windows-x86_64-cp310" in message and "Import Python Plugin" in message
    assert "build.py --target linux-x86_64-cp311" in message


# --- reading the document ---------------------------------------------------------------


def rgba8_canvas(width: int, height: int) -> bytes:
    """A deterministic opaque BGRA pattern."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs % 256, ys % 256, (xs + ys) % 256, np.full_like(xs, 255)], axis=2)
    return image.astype(np.uint8).tobytes()


def rect_selection(width: int, height: int, rect: Rect) -> FakeSelection:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[rect.y : rect.bottom, rect.x : rect.right] = 255
    return FakeSelection(mask)


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
        (lambda: _with_selection(np.zeros((20, 20))), UserError, "selection is empty"),
        (lambda: _with_selection(_ghost_selection()), UserError, "selection is empty"),
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


def _ghost_selection() -> FakeSelection:
    """A selection whose bounding box is not empty but whose pixels are all 0, as Krita
    can leave after erasing a selection mask."""
    selection = FakeSelection(np.zeros((20, 20)))
    selection._bounds = lambda: (5, 5, 4, 4)
    return selection


def _with_selection(selection: np.ndarray | FakeSelection) -> FakeDocument:
    doc = FakeDocument(20, 20, rgba8_canvas(20, 20))
    if not isinstance(selection, FakeSelection):
        selection = FakeSelection(selection)
    doc.setSelection(selection)
    return doc


# --- the worker job ---------------------------------------------------------------------


def snapshot_of(doc: FakeDocument, context: int = 25) -> Snapshot:
    return document.take_snapshot(doc, context_percent=context)


def test_prepare_scales_image_and_mask_to_the_generation_size():
    doc = FakeDocument(400, 300, rgba8_canvas(400, 300))
    doc.setSelection(rect_selection(400, 300, Rect(100, 100, 160, 80)))
    plan = prepare(snapshot_of(doc), Settings(), tiny_models())
    assert (plan.width, plan.height) == (312, 208)  # 240x160 region -> 256^2 area
    assert plan.image.shape == (208, 312, 3) and plan.image.dtype == np.uint8
    assert plan.mask.shape == (208, 312) and plan.mask.dtype == np.uint8
    assert plan.mask[104, 156] == 255 and plan.mask[2, 2] == 0
    assert plan.canny_model == "edges-v11"  # found by kind, not by name


def test_prepare_refuses_a_server_without_canny_or_an_unknown_model():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    with pytest.raises(UserError, match="canny"):
        prepare(snapshot_of(doc), Settings(), tiny_models(canny=False))
    with pytest.raises(UserError, match="no model named 'sdxl'.*tiny"):
        prepare(snapshot_of(doc), Settings(model="sdxl"), tiny_models())


def test_job_sends_an_inpaint_request_with_a_server_side_canny_unit():
    doc = FakeDocument(128, 128, rgba8_canvas(128, 128))
    doc.setSelection(rect_selection(128, 128, Rect(32, 32, 64, 64)))
    client, events = FakeClient(), []
    settings = Settings(
        prompt="a cat", seed=9, steps=12, strength=0.6, edge_weight=0.7, edge_low=40
    )
    RepaintJob(client, snapshot_of(doc), settings, events.append).run()

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
    # What goes over the wire, built by the SDK itself.
    [message] = client.messages
    assert message.HasField("mask") and not message.HasField("mask_blur")  # server default
    assert message.controls[0].canny.low == 40 and message.controls[0].canny.high == 200
    assert (message.width, message.height) == (256, 256)
    assert client.closed
    assert isinstance(events[-1], Finished) and events[-1].seed == 7
    assert sum(isinstance(e, PreviewReady) for e in events) == 3


def test_job_fetches_the_edge_map_only_to_show_it():
    doc = FakeDocument(100, 60, rgba8_canvas(100, 60))
    client, events = FakeClient(), []
    settings = Settings(show_edges=True, edge_low=10, edge_high=90)
    RepaintJob(client, snapshot_of(doc), settings, events.append).run()
    [(control, size)] = client.preprocessed
    [(_, request)] = client.requests
    assert control is request["controls"][0]  # the very unit Generate gets
    assert size == {"width": request["width"], "height": request["height"]}
    [edges] = [e for e in events if isinstance(e, EdgesReady)]
    assert len(edges.pixels) == 100 * 60 * 4  # at the region's size, in document bytes


def test_job_random_seed_is_left_to_the_server():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient()
    RepaintJob(client, snapshot_of(doc), Settings(), lambda event: None).run()
    assert client.requests[0][1]["seed"] is None


def test_job_turns_server_errors_into_one_failed_event():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    events = []
    client = FakeClient(down=True)
    RepaintJob(client, snapshot_of(doc), Settings(address="gpu:1"), events.append).run()
    assert isinstance(events[-1], Failed) and "gpu:1" in events[-1].message
    assert client.closed


# --- the controller: events to layers ---------------------------------------------------


class Recorder:
    """The controller's view: remembers what the user would have seen."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.progress: list[tuple[int, int]] = []
        self.ended: list[tuple[str, bool]] = []

    def show_status(self, text: str) -> None:
        self.statuses.append(text)

    def show_progress(self, step: int, total: int) -> None:
        self.progress.append((step, total))

    def job_ended(self, message: str, is_error: bool) -> None:
        self.ended.append((message, is_error))


def run_sync(doc, client, settings=None, **kwargs):
    """Start a repaint whose worker runs to the end inside start(), then poll once."""
    view = Recorder()
    controller = RepaintController(
        view,
        client_factory=lambda s: client,
        start_thread=lambda run: run(),
        is_open=lambda d: True,
        **kwargs,
    )
    started = controller.start(doc, settings or Settings(prompt="a red door"))
    controller.poll()
    return started, view, controller


def layer_rgba(doc: FakeDocument, name: str) -> np.ndarray:
    node = next(n for n in doc.root.childNodes() if n.name() == name)
    fmt = pixels.pixel_format(doc.model, doc.depth, doc.profile)
    return pixels.decode(bytes(node.data), doc.canvas_width, doc.canvas_height, fmt)


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
def test_repaint_adds_one_layer_masked_to_the_selection(depth, profile, model):
    fmt = pixels.pixel_format(model, depth, profile)
    width, height = 160, 120
    background = np.zeros((height, width, 4), dtype=np.float32)
    background[:, :, :3], background[:, :, 3] = 0.3, 1.0
    doc = FakeDocument(width, height, pixels.encode(background, fmt), model, depth, profile)
    selected = Rect(40, 30, 60, 50)
    doc.setSelection(rect_selection(width, height, selected))

    started, view, _ = run_sync(doc, FakeClient(color=(200, 100, 50)))

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


def test_large_canvas_without_selection_is_scaled_down_and_pasted_back():
    doc = FakeDocument(1000, 700, rgba8_canvas(1000, 700))
    client = FakeClient(color=(0, 255, 0))
    started, view, _ = run_sync(doc, client, Settings(prompt="grass"))
    options = client.requests[0][1]
    assert (options["width"], options["height"]) == (304, 216)
    layer = layer_rgba(doc, "grass")
    assert np.allclose(layer[:, :, 3], 1) and np.allclose(layer[:, :, :3], [0, 1, 0], atol=1e-3)


def test_show_edges_adds_a_screen_layer_of_the_edges():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    run_sync(doc, FakeClient(), Settings(prompt="x", show_edges=True))
    assert doc.layer_names() == ["Background", "Edges: x", "x"]
    edges = next(n for n in doc.root.childNodes() if n.name() == "Edges: x")
    assert edges.blendingMode() == "screen"


@pytest.mark.parametrize(
    ("client", "words"),
    [
        (FakeClient(down=True), "Cannot reach the Tether server at 127.0.0.1:50051"),
        (FakeClient(reject=tether.InvalidArgument("steps: at most 150")), "rejected"),
        (FakeClient(models=tiny_models(canny=False)), "no canny control model"),
    ],
    ids=["server-down", "server-rejects", "no-canny"],
)
def test_failures_leave_the_document_untouched(client, words):
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    doc.setSelection(rect_selection(64, 64, Rect(8, 8, 16, 16)))
    before = bytes(doc.root.childNodes()[0].data)
    started, view, controller = run_sync(doc, client, Settings(show_edges=True))
    [(message, is_error)] = view.ended
    assert is_error and words in message
    assert doc.layer_names() == ["Background"]
    assert bytes(doc.root.childNodes()[0].data) == before
    assert not controller.running


def test_refusals_before_the_job_start_no_thread():
    threads = []
    view = Recorder()
    controller = RepaintController(
        view, client_factory=lambda s: FakeClient(), start_thread=threads.append
    )
    assert not controller.start(None, Settings())
    doc = _with_selection(np.zeros((20, 20)))
    assert not controller.start(doc, Settings())
    assert not controller.start(FakeDocument(8, 8, rgba8_canvas(8, 8)), Settings(steps=0))
    cmyk = FakeDocument(4, 4, bytes(80), model="CMYKA")
    assert not controller.start(cmyk, Settings())
    assert threads == [] and [error for _, error in view.ended] == [True] * 4
    assert "Open an image" in view.ended[0][0] and "empty" in view.ended[1][0]
    assert "Steps" in view.ended[2][0] and "Convert Image Color Space" in view.ended[3][0]
    assert doc.undo_log == []


def test_cancel_stops_the_server_job_and_removes_the_preview():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(hold=True)
    view = Recorder()
    controller = RepaintController(view, client_factory=lambda s: client, is_open=lambda d: True)
    assert controller.start(doc, Settings(prompt="p"))
    assert controller.start(doc, Settings()) is False  # one job at a time
    assert "already running" in view.ended[-1][0]
    _poll_until(controller, lambda: doc.undo_log)  # a preview made it into the layer
    assert doc.layer_names() == ["Background", "p (painting…)"]
    controller.cancel()
    _poll_until(controller, lambda: not controller.running)
    assert client.streams[0].cancelled.is_set()
    assert view.ended[-1] == ("Cancelled.", False)
    assert doc.layer_names() == ["Background"]


def test_closing_the_document_cancels_the_job_and_writes_nothing():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    client = FakeClient(hold=True)
    view = Recorder()
    open_documents = [doc]
    controller = RepaintController(
        view, client_factory=lambda s: client, is_open=lambda d: d in open_documents
    )
    controller.start(doc, Settings())
    _poll_until(controller, lambda: client.streams)
    open_documents.clear()
    _poll_until(controller, lambda: not controller.running)
    assert client.streams[0].cancelled.is_set()
    assert view.ended[-1] == ("Cancelled.", False)


def test_previews_and_result_share_one_layer_and_one_undo_step():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    doc.setSelection(rect_selection(64, 64, Rect(16, 16, 32, 32)))
    client = FakeClient(hold=True)
    view = Recorder()
    controller = RepaintController(view, client_factory=lambda s: client, is_open=lambda d: True)
    controller.start(doc, Settings(prompt="p"))
    _poll_until(controller, lambda: doc.undo_log)
    preview = layer_rgba(doc, "p (painting…)")
    assert np.allclose(preview[16:48, 16:48, :3], 128 / 255, atol=1 / 255)
    assert np.all(preview[:16, :, 3] == 0)  # previews are masked like the result
    client.streams[0].release()
    _poll_until(controller, lambda: not controller.running)
    assert view.ended[-1][1] is False, view.ended
    assert doc.layer_names() == ["Background", "p"]
    assert [action for action, _ in doc.undo_log] == ["add"]
    assert np.allclose(layer_rgba(doc, "p")[16:48, 16:48, :3], [200 / 255, 100 / 255, 50 / 255])


def test_previews_are_throttled_to_spare_krita():
    doc = FakeDocument(64, 64, rgba8_canvas(64, 64))
    now = [0.0]
    client = FakeClient()
    view = Recorder()
    controller = RepaintController(
        view,
        client_factory=lambda s: client,
        start_thread=lambda run: run(),
        is_open=lambda d: True,
        clock=lambda: now[0],
    )
    controller.start(doc, Settings(prompt="p"))
    controller.poll()  # three previews and the result arrive in one poll
    node = next(n for n in doc.root.childNodes() if n.name() == "p")
    assert node.writes == 1  # the result only: stale previews were skipped
    assert view.progress == [(1, 3), (2, 3), (3, 3)]


def _poll_until(controller, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        controller.poll()
        time.sleep(0.01)


def _load_build():
    import importlib.util

    if "krita_build" in sys.modules:
        return sys.modules["krita_build"]
    spec = importlib.util.spec_from_file_location("krita_build", ROOT / "clients/krita/build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["krita_build"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
