"""Live mode on the GUI thread: notice the user's edits, hand the canvas to the session,
show each result in the live layer, Apply and Stop. Free of Qt, like the repaint
controller: the plugin's timer calls `poll()`.

How edits are noticed: Krita 5.1's Python API has no signal for them (Document has none,
the Notifier only reports documents and windows opening, saving and closing, and
`Document.modified()` stays true after the first edit). So `poll` measures cheaply, at
most every CHECK_INTERVAL_S, what an edit changes (`document.canvas_measure`: the layer
stack and the active layer's pixels over the region: a memory copy, no recompositing).
Only when the measure changed, Krita is idle (a stroke has ended) and the server is ready
for another frame is the canvas read, which costs two recomposites of the image
(`LiveLayer.read_below`).
"""

from __future__ import annotations

from typing import Any, Protocol

from tether import background

from . import document as krita_document
from .controller import IN_KRITA, Outside
from .geometry import Rect
from .live import FIRST_FRAME, LiveLink, LivePainted, LiveRefused, LiveStarted
from .messages import describe
from .settings import Settings

# Strokes end a few times a second at most; measuring more often only costs Krita's time.
CHECK_INTERVAL_S = 0.2
# Frames handed over and not answered yet: one the server paints and one waiting, sent
# the moment the first is answered. Reading more would only replace the waiting one.
MAX_UNANSWERED = 2


class LiveView(Protocol):
    """Where the controller reports: the docker, or a test's recorder."""

    def show_status(self, text: str) -> None: ...

    def live_ended(self, message: str, is_error: bool) -> None:
        """Live is off: `message` says why; errors deserve the user's attention."""


class LiveController:
    """One live session at a time, for the document that was active when it started."""

    def __init__(self, view: LiveView, outside: Outside = IN_KRITA) -> None:
        self._view = view
        self._outside = outside
        self._reset()

    def _reset(self) -> None:
        self._link: LiveLink | None = None
        self._document: Any = None
        self._layer: krita_document.LiveLayer | None = None
        self._region = Rect(0, 0, 0, 0)
        self._settings = Settings()
        self._stopping = False
        self._open = False  # the server accepted the session
        self._handed = 0  # the id of the last frame handed to the session
        self._answered = 0  # the id of the last frame the server answered
        self._newest: LivePainted | None = None  # the newest result, shown or not
        self._shown = 0  # the id of the frame whose result the live layer shows
        self._measure: Any = None
        self._measured_at = float("-inf")
        self._resend = False  # send the canvas even if unchanged (new settings)

    @property
    def running(self) -> bool:
        """True from `start` until the view hears `live_ended`."""
        return self._link is not None

    @property
    def shown_frame(self) -> int:
        """The id of the frame whose result the live layer shows (0: none yet)."""
        return self._shown

    def start(self, document: Any, settings: Settings) -> bool:
        """Turn Live on for `document`. False, after telling the view why, when it cannot
        start; the document is then untouched."""
        if self._link is not None:
            self._view.show_status("Live is still stopping; try again in a moment.")
            return False
        try:
            snapshot, client = self._outside.begin(document, settings, settings.live_problem())
        except Exception as error:  # noqa: BLE001 - shown to the user, never a traceback
            self._view.live_ended(describe(error, settings.address), True)
            return False
        self._link = LiveLink(client, snapshot, settings)
        self._document, self._settings = document, settings
        self._layer = krita_document.LiveLayer(document, snapshot.region)
        self._region = snapshot.region
        self._handed = FIRST_FRAME  # the snapshot's pixels
        self._measure = krita_document.canvas_measure(document, snapshot.region, None)
        self._view.show_status("Live: connecting…")
        self._outside.start_job(self._link.job)
        return True

    def configure(self, settings: Settings) -> None:
        """New settings from the docker: the next frames use them, and the canvas is sent
        again so that the change shows."""
        if self._link is None or self._stopping:
            return
        problem = settings.live_problem()
        if problem is not None:
            self._view.show_status(f"{problem} Live keeps the last good settings.")
            return
        self._settings = settings
        self._link.configure(settings)
        self._resend = True

    def apply(self) -> bool:
        """Copy the live result onto a new layer (one undo step). False, after telling the
        view why, when there is nothing to copy."""
        if self._layer is None or self._layer.pixels is None or self._document is None:
            self._view.show_status("Nothing to apply yet: Live has not shown a result.")
            return False
        name = self._settings.layer_name
        self._layer.apply(name)
        self._view.show_status(f"Applied: layer “{name}”. Live goes on.")
        return True

    def stop(self) -> None:
        """End the session; the view hears `live_ended` once its threads are gone."""
        if self._link is not None and not self._stopping:
            self._stopping = True
            self._view.show_status("Stopping Live…")
            self._link.stop()

    def poll(self) -> None:
        """Show what the session answered, and send the canvas if the user changed it.
        GUI thread only."""
        if self._link is None:
            return
        if self._document is not None and not self._outside.is_open(self._document):
            self._document = None  # closed: nothing left to read or paint into
            self.stop()
        for event in self._link.job.poll():
            self._handle(event)
        if self._link is not None and not self._stopping:
            self._show_newest()
            self._send_if_changed()

    def _handle(self, event: Any) -> None:
        if isinstance(event, LiveStarted):
            self._open = True
            self._view.show_status(
                f"Live: painting at {event.width}×{event.height}, seed {event.seed}."
            )
        elif isinstance(event, LivePainted):
            self._answered = max(self._answered, event.frame_id)
            # Latest wins: a result never replaces that of a newer frame.
            if self._newest is None or event.frame_id > self._newest.frame_id:
                self._newest = event
        elif isinstance(event, LiveRefused):
            self._answered = max(self._answered, event.frame_id)
            self._view.show_status(event.message)
        elif isinstance(event, background.Stopped):
            self._end("Live is off.", is_error=False)
        elif isinstance(event, background.Failed):
            self._end(event.message, is_error=True)
        elif isinstance(event, background.Done):
            self._end("Live is off: the server ended the session.", is_error=False)

    def _show_newest(self) -> None:
        newest = self._newest
        if newest is None or newest.frame_id <= self._shown or self._document is None:
            return
        self._layer.show(newest.pixels)
        self._shown = newest.frame_id

    def _send_if_changed(self) -> None:
        if not self._open or self._document is None:
            return
        if self._handed - self._answered >= MAX_UNANSWERED:
            return
        now = self._outside.clock()
        if now - self._measured_at < CHECK_INTERVAL_S:
            return
        self._measured_at = now
        document, region = self._document, self._region
        measure = krita_document.canvas_measure(document, region, self._layer.node)
        if measure == self._measure and not self._resend:
            return
        if not krita_document.is_idle(document):
            return  # a stroke is in progress: its end changes the measure again
        data = self._layer.read_below()
        self._measure, self._resend = measure, False
        self._handed += 1
        self._link.send(self._handed, data)

    def _end(self, message: str, is_error: bool) -> None:
        if self._layer is not None and self._document is not None:
            self._layer.remove()
        self._reset()
        self._view.live_ended(message, is_error)
