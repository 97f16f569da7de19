"""The plugin's shared state inside Krita: one repaint controller and one live controller
for all windows, the timer that drives them, and the dockers that show their progress."""

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
from .live_controller import LiveController
from .settings import Settings

POLL_INTERVAL_MS = 50


class ProgressDisplay(Protocol):
    """What a docker shows of the running job."""

    def show_status(self, text: str) -> None: ...

    def show_progress(self, step: int, total: int) -> None: ...

    def set_running(self, running: bool) -> None: ...

    def set_live(self, on: bool) -> None: ...


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
    """Implements the controllers' JobView and LiveView by fanning out to the registered
    dockers. A repaint and Live exclude each other: a repaint would read the live layer."""

    def __init__(self, alert: Callable[[str], None] = alert_in_window) -> None:
        self._alert = alert
        self._displays: weakref.WeakSet[Any] = weakref.WeakSet()
        self.controller = RepaintController(self)
        self.live = LiveController(self)
        self.last_message = ""
        self._timer = QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)

    def add_display(self, display: ProgressDisplay) -> None:
        self._displays.add(display)
        display.set_running(self.controller.running)
        display.set_live(self.live.running)

    def repaint(self, document: Any = None, settings: Settings | None = None) -> bool:
        """Repaint the selection of `document` (default: the active one) with `settings`
        (default: the saved ones). False when it could not start (the user was told)."""
        if document is None:
            document = Krita.instance().activeDocument()
        if settings is None:
            settings = load_settings()
        if self.live.running:
            self.job_ended("Live is on: turn it off before repainting.", True)
            return False
        started = self.controller.start(document, settings)
        if started:
            for display in list(self._displays):
                display.set_running(True)
            self._timer.start()
        return started

    def cancel(self) -> None:
        self.controller.cancel()

    def start_live(self, document: Any = None, settings: Settings | None = None) -> bool:
        """Turn Live on for `document` (default: the active one) with `settings` (default:
        the saved ones). False when it could not start (the user was told)."""
        if document is None:
            document = Krita.instance().activeDocument()
        if settings is None:
            settings = load_settings()
        if self.live.running:
            self.show_status("Live is still stopping; try again in a moment.")
            return False
        if self.controller.running:
            started = False
            self.live_ended("A repaint is running: wait for it, or cancel it, first.", True)
        else:
            started = self.live.start(document, settings)
        if not started:
            # Nothing is being painted yet: a message box interrupts no one.
            self._alert(self.last_message)
            return False
        for display in list(self._displays):
            display.set_live(True)
        self._timer.start()
        return True

    def stop_live(self) -> None:
        self.live.stop()

    def toggle_live(self) -> None:
        if self.live.running:
            self.stop_live()
        else:
            self.start_live()

    def apply_live(self) -> bool:
        return self.live.apply()

    def configure_live(self, settings: Settings) -> None:
        """The docker's settings changed; a running session takes them."""
        self.live.configure(settings)

    def _tick(self) -> None:
        self.controller.poll()
        self.live.poll()
        if not self.controller.running and not self.live.running:
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

    # LiveView (errors of a running session stay in the docker: a message box would
    # interrupt painting)
    def live_ended(self, message: str, is_error: bool) -> None:
        self.last_message = message
        for display in list(self._displays):
            display.set_live(False)
            display.show_status(message)


_plugin: Plugin | None = None


def instance() -> Plugin:
    """The one Plugin, made on first use (on the GUI thread: it owns a QTimer)."""
    global _plugin
    if _plugin is None:
        _plugin = Plugin()
    return _plugin
