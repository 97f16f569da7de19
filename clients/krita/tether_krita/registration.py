"""Hooks the plugin into Krita: the docker, and the menu actions under Tools > Scripts.

When the vendored libraries cannot load, the same docker and actions exist but only
explain what is wrong and how to fix it, instead of Krita showing a traceback.
"""

from __future__ import annotations

from typing import Any

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita
from PyQt5.QtWidgets import QLabel, QMessageBox

DOCKER_ID = "tether_docker"
MENU = "tools/scripts"


class TetherExtension(Extension):
    """The Repaint, Cancel, Live and Apply actions (Krita lets users give them shortcuts)."""

    def __init__(self, parent: Any) -> None:
        super().__init__(parent)

    def setup(self) -> None:
        """Required by Extension; everything happens per window in createActions."""

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's virtual
        from . import plugin

        repaint = window.createAction(
            "tether_repaint_selection", "Repaint Selection with Tether", MENU
        )
        repaint.triggered.connect(lambda: plugin.instance().repaint())
        cancel = window.createAction("tether_cancel", "Cancel Tether Repaint", MENU)
        cancel.triggered.connect(lambda: plugin.instance().cancel())
        live = window.createAction("tether_live", "Toggle Tether Live", MENU)
        live.triggered.connect(lambda: plugin.instance().toggle_live())
        apply = window.createAction("tether_live_apply", "Apply Tether Live Result", MENU)
        apply.triggered.connect(lambda: plugin.instance().apply_live())


class ProblemExtension(Extension):
    """Stands in for TetherExtension when the libraries are missing."""

    def __init__(self, parent: Any, problem: str) -> None:
        super().__init__(parent)
        self._problem = problem

    def setup(self) -> None:
        """Required by Extension."""

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's virtual
        action = window.createAction(
            "tether_repaint_selection", "Repaint Selection with Tether", MENU
        )
        action.triggered.connect(
            lambda: QMessageBox.warning(window.qwindow(), "Tether", self._problem)
        )


def problem_docker(problem: str) -> type:
    """A docker class that only shows `problem`."""

    class ProblemDocker(DockWidget):
        def __init__(self) -> None:
            super().__init__()
            self.setWindowTitle("Tether")
            label = QLabel(problem)
            label.setWordWrap(True)
            self.setWidget(label)

        def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's virtual
            """Required by DockWidget."""

    return ProblemDocker


def register(problem: str | None) -> None:
    """Called once when Krita loads the plugin; `problem` from bootstrap."""
    app = Krita.instance()
    if problem is None:
        from .docker import TetherDocker

        docker: type = TetherDocker
        extension: Extension = TetherExtension(app)
    else:
        docker = problem_docker(problem)
        extension = ProblemExtension(app, problem)
    app.addExtension(extension)
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, docker))
