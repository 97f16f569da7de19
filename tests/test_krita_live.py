"""tether_krita.live and live_controller: Live mode with fakes of Krita's document API
(tests/krita/krita_fakes.py), against the stand-in server (tests/krita/fake_tether.py),
whose answers say which frame they answer, and against a real server on the tiny model.
Real Krita: tests/test_krita_live_real.py."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tether
from tether._proto.tether.v1 import tether_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "krita"))
sys.path.insert(0, str(ROOT / "tests" / "krita"))

from fake_tether import LIVE_BLUE, LIVE_GREEN, FakeClient, served_models  # noqa: E402
from krita_fakes import FakeDocument, FakeSelection, rect_selection, rgba8_canvas  # noqa: E402
from tether_krita import pixels  # noqa: E402
from tether_krita.controller import Outside  # noqa: E402
from tether_krita.document import LiveLayer  # noqa: E402
from tether_krita.geometry import Rect  # noqa: E402
from tether_krita.live_controller import LiveController  # noqa: E402
from tether_krita.settings import Settings  # noqa: E402

SIZE = (128, 96)
SELECTED = Rect(32, 24, 48, 40)
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def served(server):
    return served_models(server)


@pytest.fixture
def make_rig():
    """`Rig(...)`, turned off after the test even when it fails: a session left open would
    keep the stand-in server's threads, and pytest, from ending."""
    rigs: list[Rig] = []

    def make(*args, **kwargs) -> Rig:
        rigs.append(Rig(*args, **kwargs))
        return rigs[-1]

    yield make
    for rig in rigs:
        try:
            if rig.live.running:
                rig.stop()
        finally:
            rig.client.close()


class Recorder:
    """The controller's view: remembers what the user would have seen."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.ended: list[tuple[str, bool]] = []

    def show_status(self, text: str) -> None:
        self.statuses.append(text)

    def live_ended(self, message: str, is_error: bool) -> None:
        self.ended.append((message, is_error))


class Rig:
    """A document with a rectangular selection, Live on it through `client`, and a clock
    that always says the next check is due."""

    def __init__(self, client: tether.Client, settings: Settings | None = None) -> None:
        width, height = SIZE
        self.doc = FakeDocument(width, height, rgba8_canvas(width, height))
        self.doc.setSelection(rect_selection(width, height, SELECTED))
        self.client = client
        self.view = Recorder()
        self.open_documents = [self.doc]
        outside = Outside(
            client_factory=lambda s: client,
            is_open=lambda d: d in self.open_documents,
            clock=itertools.count().__next__,
        )
        self.live = LiveController(self.view, outside)
        self.settings = settings or Settings(prompt="p", seed=9)
        self.started = self.live.start(self.doc, self.settings)

    def poll_until(self, condition, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; saw {self.view.statuses[-3:]}"
            self.live.poll()
            time.sleep(0.01)

    def paint(self, value: int) -> None:
        """A stroke on the active (background) layer, inside the selection."""
        node = self.doc.activeNode()
        width, height = SIZE
        data = np.frombuffer(bytes(node.data), dtype=np.uint8).reshape(height, width, 4).copy()
        data[SELECTED.y + 4 : SELECTED.y + 20, SELECTED.x + 4 : SELECTED.x + 30, :3] = value
        node.setPixelData(data.tobytes(), 0, 0, width, height)

    def stop(self) -> None:
        self.live.stop()
        self.poll_until(lambda: not self.live.running)

    def layer(self, name: str = LiveLayer.NAME) -> np.ndarray:
        node = next(n for n in self.doc.root.childNodes() if n.name() == name)
        fmt = pixels.pixel_format(self.doc.model, self.doc.depth, self.doc.profile)
        return pixels.decode(bytes(node.data), *SIZE, fmt)

    def frames(self) -> list:
        return [r.frame for r in self.client.fake.live_requests if r.HasField("frame")]

    def configs(self) -> list:
        return [r.config for r in self.client.fake.live_requests if r.HasField("config")]


def live_threads() -> list[threading.Thread]:
    """The session's threads still alive, given a moment to finish their last lines."""
    threads = [t for t in threading.enumerate() if t.name.startswith("tether-live")]
    for thread in threads:
        thread.join(5)
    return [t for t in threads if t.is_alive()]


def inside() -> np.ndarray:
    mask = np.zeros(SIZE[::-1], dtype=bool)
    mask[SELECTED.y : SELECTED.bottom, SELECTED.x : SELECTED.right] = True
    return mask


def test_live_sends_the_canvas_with_a_server_side_canny_unit(served, make_rig):
    settings = Settings(
        prompt="a fox", seed=9, strength=0.6, live_steps=3, edge_weight=0.7, edge_low=40
    )
    rig = make_rig(FakeClient(served), settings)
    assert rig.started
    rig.poll_until(lambda: rig.live.shown_frame == 1)

    [config] = rig.configs()
    assert config.prompt == "a fox" and config.seed == 9 and config.steps == 3
    assert config.strength == pytest.approx(0.6)
    [unit] = config.controls
    assert unit.model == "edges-v11"  # the server's canny model, found by kind
    assert unit.canny.low == 40 and unit.canny.high == 200
    assert unit.weight == pytest.approx(0.7) and not unit.HasField("image")
    [frame] = rig.frames()
    assert frame.id == 1
    assert (frame.image.raw.width, frame.image.raw.height) == (config.width, config.height)
    assert config.width % 8 == 0 and config.width * config.height <= 256 * 256
    # The frame brings the colour image; the server finds the edges in it.
    assert frame.controls[0] == frame.image

    assert rig.doc.layer_names() == ["Background", "Tether live"]
    assert rig.doc.undo_log == [("add", "Tether live")]
    layer = rig.layer()
    assert np.all(layer[~inside(), 3] == 0) and np.allclose(layer[inside(), 3], 1)
    assert np.allclose(layer[inside(), :3], np.array([1, LIVE_GREEN, LIVE_BLUE]) / 255)
    assert (
        rig.view.statuses[-1].startswith("Live: painting at") and "seed 9" in rig.view.statuses[-1]
    )
    rig.stop()


def test_live_sends_the_loras_and_tiling_and_a_tiled_session_reads_the_whole_canvas(
    server, make_rig
):
    served = served_models(server, loras=("detail",))
    settings = Settings(prompt="p", seed=9, loras=(tether.Lora("detail", 0.4),), tiling="xy")
    rig = make_rig(FakeClient(served), settings)
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    [config] = rig.configs()
    assert [(lora.name, round(lora.weight, 3)) for lora in config.loras] == [("detail", 0.4)]
    assert config.tiling == tether_pb2.TILING_XY
    assert config.width / config.height == pytest.approx(SIZE[0] / SIZE[1], rel=0.05)
    layer = rig.layer()  # the whole canvas was sent; the selection still masks the result
    assert np.all(layer[~inside(), 3] == 0) and np.allclose(layer[inside(), 3], 1)
    rig.stop()


def test_edits_are_sent_once_a_stroke_ends_and_an_unchanged_canvas_is_not(served, make_rig):
    rig = make_rig(FakeClient(served))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    for _ in range(20):
        rig.live.poll()
    assert len(rig.frames()) == 1  # nothing changed, nothing sent

    rig.doc.busy = True  # a stroke in progress: the canvas is not read
    rig.paint(0)
    reads = rig.doc.reads
    for _ in range(20):
        rig.live.poll()
    assert rig.doc.reads == reads and len(rig.frames()) == 1

    rig.doc.busy = False  # the stroke ended
    rig.poll_until(lambda: rig.live.shown_frame == 2)
    first, second = rig.frames()
    assert first.image.raw.data != second.image.raw.data  # the stroke reached the server
    assert rig.layer()[inside(), 0].max() == pytest.approx(2 / 255)
    assert rig.doc.undo_log == [("add", "Tether live")]  # results write, they add nothing
    rig.stop()


def test_a_result_never_replaces_that_of_a_newer_frame(served, make_rig):
    rig = make_rig(FakeClient(served, stale=True))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    rig.paint(0)
    rig.poll_until(lambda: rig.live.shown_frame == 2)
    rig.paint(50)
    # The server answered frame 2 and then frame 1 again, before it answered frame 3.
    rig.poll_until(lambda: rig.live.shown_frame == 3)
    node = next(n for n in rig.doc.root.childNodes() if n.name() == LiveLayer.NAME)
    # Each write covers the region in BGRA: the red byte inside it is the frame's id.
    shown = [np.frombuffer(data, dtype=np.uint8)[2::4].max() for data in node.history]
    assert shown == [1, 2, 3]  # never frame 1 after frame 2
    rig.stop()


def test_at_most_one_frame_waits_behind_the_one_being_painted(served, make_rig):
    client = FakeClient(served, hold=True)
    rig = make_rig(client)
    rig.poll_until(lambda: rig.view.statuses[-1].startswith("Live: painting"))
    reads = rig.doc.reads
    rig.paint(0)
    rig.poll_until(lambda: rig.doc.reads > reads)  # frame 2, waiting behind frame 1
    reads = rig.doc.reads
    rig.paint(50)
    for _ in range(20):
        rig.live.poll()
    assert rig.doc.reads == reads  # a third read would only replace frame 2
    assert [frame.id for frame in rig.frames()] == [1]  # the SDK holds frame 2 back
    client.fake.released.set()
    rig.poll_until(lambda: rig.live.shown_frame == 3)
    assert [frame.id for frame in rig.frames()] == [1, 2, 3]
    rig.stop()


def test_apply_copies_the_result_under_the_live_layer_in_one_undo_step(served, make_rig):
    rig = make_rig(FakeClient(served), Settings(prompt="a red door", seed=1))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    assert rig.live.apply()
    assert rig.doc.layer_names() == ["Background", "a red door", "Tether live"]
    assert rig.doc.undo_log == [("add", "Tether live"), ("add", "a red door")]
    applied = rig.layer("a red door")
    assert np.array_equal(applied, rig.layer())
    assert np.all(applied[~inside(), 3] == 0)  # masked to the selection
    assert rig.live.running and "Applied" in rig.view.statuses[-1]

    rig.stop()
    assert rig.view.ended == [("Live is off.", False)]
    assert rig.doc.layer_names() == ["Background", "a red door"]  # the live layer goes
    assert rig.client.fake.live_ended.wait(5)
    assert live_threads() == []


def test_stop_before_the_first_result_leaves_the_document_untouched(served, make_rig):
    rig = make_rig(FakeClient(served, hold=True))
    rig.stop()
    assert rig.view.ended == [("Live is off.", False)]
    assert rig.doc.layer_names() == ["Background"] and rig.doc.undo_log == []
    assert not rig.live.apply() and "Nothing to apply" in rig.view.statuses[-1]
    assert live_threads() == []


def test_refused_frames_show_a_sentence_and_live_goes_on(served, make_rig):
    rig = make_rig(FakeClient(served, refuse={2}))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    rig.paint(0)
    rig.poll_until(lambda: "could not paint" in rig.view.statuses[-1])
    assert rig.view.statuses[-1] == (
        "The Tether server could not paint the canvas: frame.image: refused"
    )
    rig.paint(50)
    rig.poll_until(lambda: rig.live.shown_frame == 3)
    assert rig.live.running
    rig.stop()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"vanish_after": 1}, "the server is shutting down"),
        ({"down": True}, "check that it is running"),
    ],
    ids=["server-goes-away", "server-down"],
)
def test_a_lost_server_turns_live_off_with_a_sentence(served, options, words, make_rig):
    rig = make_rig(FakeClient(served, **options))
    rig.poll_until(lambda: not rig.live.running)
    [(message, is_error)] = rig.view.ended
    assert is_error and message.startswith("Cannot reach the Tether server at 127.0.0.1:50051")
    assert words in message and "the Tether docker" in message
    assert rig.doc.layer_names() == ["Background"]
    assert live_threads() == []


def test_a_server_without_canny_turns_live_off_with_a_sentence(server, make_rig):
    rig = make_rig(FakeClient(served_models(server, canny=None)))
    rig.poll_until(lambda: not rig.live.running)
    assert rig.view.ended == [
        ("The Tether server offers no canny control model, which Repaint and Live need.", True)
    ]
    assert rig.client.fake.live_requests == []  # refused before the session opened


def test_new_settings_reach_the_session_and_the_canvas_is_sent_again(served, make_rig):
    rig = make_rig(FakeClient(served))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    rig.live.configure(Settings(prompt="a fox", seed=3, live_steps=4))
    rig.poll_until(lambda: rig.live.shown_frame == 2)
    first, second = rig.configs()
    assert (second.prompt, second.seed, second.steps) == ("a fox", 3, 4)
    kinds = [r.WhichOneof("message") for r in rig.client.fake.live_requests]
    assert kinds == ["config", "frame", "config", "frame"]

    rig.live.configure(Settings(prompt="x", live_steps=7))  # the docker allows 1 to 4
    assert rig.view.statuses[-1] == "Live steps must be 1 to 4. Live keeps the last good settings."
    for _ in range(10):
        rig.live.poll()
    assert len(rig.configs()) == 2
    rig.stop()


def test_a_random_seed_is_drawn_once_per_session(served, make_rig):
    rig = make_rig(FakeClient(served), Settings(prompt="p"))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    rig.live.configure(Settings(prompt="q"))
    rig.poll_until(lambda: len(rig.configs()) == 2)
    first, second = rig.configs()
    assert first.seed == second.seed  # the same noise on every frame: stable results
    rig.stop()


def test_refusals_before_the_session_start_nothing(served):
    started = []
    view = Recorder()
    outside = Outside(client_factory=lambda s: FakeClient(served), start_job=started.append)
    live = LiveController(view, outside)
    assert not live.start(None, Settings())
    empty = FakeDocument(20, 20, rgba8_canvas(20, 20))
    empty.setSelection(FakeSelection(np.zeros((20, 20))))
    assert not live.start(empty, Settings())
    assert not live.start(FakeDocument(8, 8, rgba8_canvas(8, 8)), Settings(live_steps=5))
    assert started == [] and [error for _, error in view.ended] == [True] * 3
    assert "Open an image" in view.ended[0][0] and "empty" in view.ended[1][0]
    assert view.ended[2][0] == "Live steps must be 1 to 4."
    assert empty.undo_log == []


def test_closing_the_document_turns_live_off(served, make_rig):
    rig = make_rig(FakeClient(served))
    rig.poll_until(lambda: rig.live.shown_frame == 1)
    rig.open_documents.clear()
    rig.poll_until(lambda: not rig.live.running)
    assert rig.view.ended == [("Live is off.", False)]
    assert rig.client.fake.live_ended.wait(5)
    assert live_threads() == []


def test_live_against_a_real_server(server, make_rig):
    """The tiny model (its pictures are noise): the session opens with the canny unit, a
    stroke gets a new result, and the server counts the session only while Live is on."""
    rig = make_rig(tether.Client(server), Settings(prompt="a red apple", seed=1, live_steps=2))
    rig.poll_until(lambda: rig.live.shown_frame == 1, timeout=120)
    with tether.Client(server) as observer:
        assert observer.server_info().live_sessions == 1
        first = rig.layer()
        assert np.all(first[~inside(), 3] == 0) and np.allclose(first[inside(), 3], 1)
        rig.paint(0)
        rig.poll_until(lambda: rig.live.shown_frame == 2, timeout=120)
        assert not np.array_equal(rig.layer()[inside()], first[inside()])
        rig.stop()
        # The server counts the session off once its handler has seen the cancel.
        deadline = time.monotonic() + 10
        while observer.server_info().live_sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert observer.server_info().live_sessions == 0
    assert live_threads() == []
