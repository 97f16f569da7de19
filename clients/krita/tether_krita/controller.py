"""Runs repaints: starts the job's worker thread, and on the GUI thread turns its events
into layers and messages. Free of Qt: whoever owns it calls `poll()` from a timer (the
plugin does, every 50 ms), and tests call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import tether
from tether import background
from tether.background import UserError

from . import document as krita_document
from .geometry import Rect
from .job import EdgesReady, PreviewReady, Repainted, Snapshot, StatusChanged, repaint_job
from .messages import describe
from .settings import Settings

# Writing a preview refreshes the whole projection; more often than this only costs
# Krita's time, not the user's.
PREVIEW_INTERVAL_S = 0.2


class JobView(Protocol):
    """Where the controller reports: the docker, or a test's recorder."""

    def show_status(self, text: str) -> None: ...

    def show_progress(self, step: int, total: int) -> None: ...

    def job_ended(self, message: str, is_error: bool) -> None:
        """The job is over: `message` says how; errors deserve the user's attention."""


ClientFactory = Callable[[Settings], Any]
JobStarter = Callable[[background.Job], None]


def default_client(settings: Settings) -> tether.Client:
    return tether.Client(settings.address.strip(), token=settings.token.strip() or None)


@dataclass(frozen=True)
class Outside:
    """What a controller takes from outside (the network, threads, Krita, the clock);
    tests pass their own."""

    client_factory: ClientFactory = default_client
    start_job: JobStarter = background.Job.start
    is_open: Callable[[Any], bool] = krita_document.document_is_open
    clock: Callable[[], float] = time.monotonic

    def begin(self, document: Any, settings: Settings, problem: str | None) -> tuple[Snapshot, Any]:
        """What a repaint or a live session starts from: the snapshot of `document` and a
        client. Raises UserError with `problem` (the settings' own check), or for a
        document the plugin cannot read."""
        if problem is not None:
            raise UserError(problem)
        snapshot = krita_document.take_snapshot(
            document, settings.context_percent, whole_canvas=bool(settings.tiling)
        )
        return snapshot, self.client_factory(settings)


IN_KRITA = Outside()


class RepaintController:
    """One repaint at a time, for whichever document was active when it started."""

    def __init__(self, view: JobView, outside: Outside = IN_KRITA) -> None:
        self._view = view
        self._outside = outside
        self._job: background.Job | None = None
        self._document: Any = None
        self._result: krita_document.ResultLayer | None = None
        self._region = Rect(0, 0, 0, 0)
        self._edges: Any = None
        self._settings = Settings()
        self._pending_preview: PreviewReady | None = None
        self._last_preview_at = float("-inf")

    @property
    def running(self) -> bool:
        return self._job is not None

    def start(self, document: Any, settings: Settings) -> bool:
        """Begin repainting the selection of `document`. Returns False, after telling the
        view why, when it cannot start; the document is then untouched."""
        if self._job is not None:
            self._view.job_ended("A repaint is already running; cancel it first.", True)
            return False
        try:
            snapshot, client = self._outside.begin(document, settings, settings.problem())
        except Exception as error:  # noqa: BLE001 - shown to the user, never a traceback
            self._view.job_ended(describe(error, settings.address), True)
            return False
        self._document, self._settings, self._region = document, settings, snapshot.region
        self._result = krita_document.ResultLayer(document, snapshot.region, settings.layer_name)
        self._edges = None
        self._pending_preview = None
        self._last_preview_at = float("-inf")
        self._job = repaint_job(client, snapshot, settings)
        self._view.show_status("Starting…")
        self._outside.start_job(self._job)
        return True

    def cancel(self) -> None:
        """Ask the server to stop the job; the view hears `job_ended` once it has."""
        if self._job is not None:
            self._view.show_status("Cancelling…")
            self._job.cancel()

    def poll(self) -> None:
        """Apply what the worker reported since the last call. GUI thread only."""
        if self._job is None:
            return
        if not self._outside.is_open(self._document):
            # The user closed the document: nothing left to paint into.
            self._job.cancel()
            self._document = None
        for event in self._job.poll():
            self._handle(event)
        if self._job is not None:
            self._apply_preview()

    def _handle(self, event: Any) -> None:
        if isinstance(event, StatusChanged):
            self._view.show_status(event.text)
        elif isinstance(event, EdgesReady):
            if self._document is not None:
                self._edges = krita_document.add_layer(
                    self._document,
                    f"Edges: {self._settings.layer_name}",
                    self._region,
                    event.pixels,
                    blending="screen",
                )
        elif isinstance(event, PreviewReady):
            self._view.show_progress(event.step, event.total)
            self._view.show_status(f"Painting: step {event.step} of {event.total}")
            if event.pixels is not None:
                self._pending_preview = event
        elif isinstance(event, background.Done):
            self._finish(event.value)
        elif isinstance(event, background.Failed):
            self._end(event.message, is_error=True, keep=False)
        elif isinstance(event, background.Stopped):
            self._end("Cancelled.", is_error=False, keep=False)

    def _apply_preview(self) -> None:
        preview = self._pending_preview
        if preview is None or self._document is None or self._result is None:
            return
        now = self._outside.clock()
        if now - self._last_preview_at < PREVIEW_INTERVAL_S:
            return
        assert preview.pixels is not None
        self._result.show(preview.pixels)
        self._pending_preview = None
        self._last_preview_at = now

    def _finish(self, event: Repainted) -> None:
        if self._document is None or self._result is None:
            self._end("The document was closed; the result was dropped.", True, keep=False)
            return
        self._result.finish(event.pixels)
        message = f"Done: layer “{self._settings.layer_name}”, seed {event.seed}. {event.note}"
        self._end(message.strip(), is_error=False, keep=True)

    def _end(self, message: str, is_error: bool, keep: bool) -> None:
        if not keep and self._document is not None:
            if self._result is not None:
                self._result.discard()
            if self._edges is not None:
                self._edges.remove()
                self._document.refreshProjection()
        self._job = None
        self._document = None
        self._result = None
        self._edges = None
        self._pending_preview = None
        self._view.job_ended(message, is_error)
