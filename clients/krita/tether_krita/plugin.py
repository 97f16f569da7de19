"""The plugin's shared state inside Krita: one repaint controller for all windows, the
timer that drives it, and the dockers that show its progress."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from krita import Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QMessageBox

from . import settings as plugin_settings
from .controller import RepaintController
from .settings import Settings

POLL_INTERVAL_MS = 50


class ProgressDisplay(Protocol):
    """What a docker shows of the running job."""

    def show_status(self, text: str) -> None: ...

    def show_progress(self, step: int, total: int) -> None: ...

    def set_running(self, running: bool) -> None: ...


def alert_in_window(message: str) -> None:
    """Tell the user something went wrong, in a message box over the active window."""
    window = Krita.instance().activeWindow()
    if window is None:
        # No window (kritarunner, scripts): a modal box would block with nobody to close it.
        print(f"Tether: {message}", file=sys.stderr)
        return
    QMessageBox.warning(window.qwindow(), "Tether", message)


def load_settings() -> Settings:
    return plugin_settings.load(Krita.instance().readSetting)


def store_settings(settings: Settings) -> None:
    plugin_settings.save(settings, Krita.instance().writeSetting)


class Plugin:
    """Implements the controller's JobView by fanning out to the registered dockers."""

    def __init__(self, alert: Callable[[str], None] = alert_in_window) -> None:
        self._alert = alert
        self._displays: weakref.WeakSet[Any] = weakref.WeakSet()
        self.controller = RepaintController(self)
        self.last_message = ""
        self._timer = QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)

    def add_display(self, display: ProgressDisplay) -> None:
        self._displays.add(display)
        display.set_running(self.controller.running)

    def repaint(self, document: Any = None, settings: Settings | None = None) -> bool:
        """Repaint the selection of `document` (default: the active one) with `settings`
        (default: the saved ones). False when it could not start (the user was told)."""
        if document is None:
            document = Krita.instance().activeDocument()
        if settings is None:
            settings = load_settings()
        started = self.controller.start(document, settings)
        if started:
            for display in list(self._displays):
                display.set_running(True)
            self._timer.start()
        return started

    def cancel(self) -> None:
        self.controller.cancel()

    def _tick(self) -> None:
        self.controller.poll()
        if not self.controller.running:
            self._timer.stop()

    # JobView
    def show_status(self, text: str) -> None:
        for display in list(self._displays):
            display.show_status(text)

    def show_progress(self, step: int, total: int) -> None:
        for display in list(self._displays):
            display.show_progress(step, total)

    def job_ended(self, message: str, is_error: bool) -> None:
        self.last_message = message
        for display in list(self._displays):
            display.set_running(False)
            display.show_status(message)
        if is_error:
            self._alert(message)


_plugin: Plugin | None = None


def instance() -> Plugin:
    """The one Plugin, made on first use (on the GUI thread: it owns a QTimer)."""
    global _plugin
    if _plugin is None:
        _plugin = Plugin()
    return _plugin
