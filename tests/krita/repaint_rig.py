"""A repaint controller wired to the fakes (tests/krita/krita_fakes.py, fake_tether.py),
for the plugin's logic tests: the view that records what the user would have seen, a
repaint run to its end, and a layer read back."""

from __future__ import annotations

import numpy as np
from krita_fakes import FakeDocument
from tether_krita import pixels
from tether_krita.controller import Outside, RepaintController
from tether_krita.settings import Settings


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
    """Start a repaint whose job runs to the end inside start(), then poll once."""
    view = Recorder()
    outside = Outside(
        client_factory=lambda s: client,
        start_job=lambda job: job.run(),
        is_open=lambda d: True,
        **kwargs,
    )
    controller = RepaintController(view, outside)
    started = controller.start(doc, settings or Settings(prompt="a red door"))
    controller.poll()
    return started, view, controller


def layer_rgba(doc: FakeDocument, name: str) -> np.ndarray:
    node = next(n for n in doc.root.childNodes() if n.name() == name)
    fmt = pixels.pixel_format(doc.model, doc.depth, doc.profile)
    return pixels.decode(bytes(node.data), doc.canvas_width, doc.canvas_height, fmt)
