"""Runs inside real Krita on a virtual X display: `kritarunner -s live_scenario` (see
tests/krita/krita_runner.py), driven by tests/test_krita_live_real.py through the JSON
file named by $TETHER_KRITA_SCENARIO:

    {"out": folder, "address": "127.0.0.1:PORT", "down": "an address nobody serves",
     "size": [width, height]}

Live mode the way a user drives it: a document in a Krita window (the undo action needs
a view), the Tether docker's Live button, a stroke written into the active layer, the
Apply button, one Undo, and Live off. It dumps raw pixels and a report (report.json) for
pytest to check; it checks nothing itself.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from pathlib import Path

from krita import Krita
from PyQt5.QtCore import QCoreApplication, QEventLoop, QSize
from PyQt5.QtGui import QColor, QImage, QPainter
from repaint_scenario import fill_background, layer_names, make_selection, pixel, wait_for

FRAME_TIMEOUT_S = 90
STROKE = (40, 60, 70, 20)  # x, y, width, height: a dark bar through the selected disc


def __main__(args: list[str]) -> None:  # noqa: N807 - kritarunner's entry point
    config = json.loads(Path(os.environ["TETHER_KRITA_SCENARIO"]).read_text())
    out = Path(config["out"])
    report: dict = {}
    try:
        import tether_krita  # noqa: F401 - bootstraps the vendored libraries, registers
        from tether_krita import plugin

        messages: list[str] = []
        # Fresh state, and alerts recorded instead of a message box nobody could close.
        plugin._plugin = plugin.Plugin(alert=messages.append)
        report["exclusion"] = live_layer_exclusion()
        report["session"] = session(config["address"], config["size"], out, messages)
        report["server_down"] = server_down(config["down"], messages)
    except Exception:  # noqa: BLE001 - the report carries it to pytest
        report["error"] = traceback.format_exc()
    (out / "report.json").write_text(json.dumps(report, indent=2))


def live_layer_exclusion() -> dict:
    """What the live layer shows, and what is read below it."""
    from tether_krita.document import LiveLayer
    from tether_krita.geometry import Rect

    document = Krita.instance().createDocument(64, 64, "exclusion", "RGBA", "U8", "", 72.0)
    document.setBatchmode(True)
    fill_background(document)
    region = Rect(8, 8, 32, 32)
    painting = bytes(document.pixelData(8, 8, 32, 32))
    red = pixel("U8", (1.0, 0.0, 0.0)) * (32 * 32)
    layer = LiveLayer(document, region)
    layer.show(red)
    document.waitForDone()
    shown = bytes(document.pixelData(8, 8, 32, 32))
    below = layer.read_below()
    after = bytes(document.pixelData(8, 8, 32, 32))
    document.close()
    return {
        "shows_result": shown == red,
        "below_is_painting": below == painting,
        "shown_again": after == red,
    }


def session(address: str, size: list[int], out: Path, messages: list[str]) -> dict:
    from tether_krita import docker, plugin
    from tether_krita.document import LiveLayer
    from tether_krita.settings import Settings

    width, height = size
    app = Krita.instance()
    settings = Settings(address=address, prompt="a red apple", seed=1, live_steps=2)
    document = app.createDocument(width, height, "live", "RGBA", "U8", "", 72.0)
    window = app.openWindow()
    window.addView(document)  # the active document from now on
    fill_background(document)
    (out / "selection.raw").write_bytes(make_selection(document, "disc"))
    background = document.rootNode().childNodes()[0]
    panel = docker.TetherDocker()
    panel._load(settings)
    live = plugin.instance().live
    # The plugin's menu actions, made for each window (Tools > Scripts).
    names = ("tether_repaint_selection", "tether_cancel", "tether_live", "tether_live_apply")
    result: dict = {"actions": [name for name in names if app.action(name) is not None]}

    # 1. Live on, from the docker's button.
    panel.live_button.setChecked(True)
    result["first"] = wait_for(lambda: live.shown_frame >= 1, FRAME_TIMEOUT_S)
    result["docker_on"] = buttons(panel)
    result["sessions_on"] = live_sessions(address)
    result["layers_live"] = layer_names(document)
    dump(document, LiveLayer.NAME, out / "live1.raw")

    # 2. A stroke on the active layer reaches the server; its result replaces the first.
    document.setActiveNode(background)
    x, y, w, h = STROKE
    background.setPixelData(pixel("U8", (0.05, 0.05, 0.05)) * (w * h), x, y, w, h)
    result["second"] = wait_for(lambda: live.shown_frame >= 2, FRAME_TIMEOUT_S)
    result["shown_frame"] = live.shown_frame
    dump(document, LiveLayer.NAME, out / "live2.raw")
    result["picture"] = picture(document, panel, out / "krita_live.png")
    result["repaint_while_live"] = plugin.instance().repaint(document, settings)
    result["alerts"] = list(messages)

    # 3. Apply, then one Undo.
    undo = app.action("edit_undo")
    panel.apply_button.click()
    document.waitForDone()
    result["layers_applied"] = layer_names(document)
    dump(document, "a red apple", out / "applied.raw")
    settle()
    result["undo_text"] = undo.text()
    undo.trigger()
    document.waitForDone()
    settle()
    result["layers_after_undo"] = layer_names(document)

    # 4. Live off, from the docker's button.
    panel.live_button.setChecked(False)
    result["stopped"] = wait_for(lambda: not live.running, FRAME_TIMEOUT_S)
    result["docker_off"] = buttons(panel)
    result["layers_off"] = layer_names(document)
    result["last_message"] = plugin.instance().last_message
    result["threads"] = live_threads()
    result["sessions_ended"] = wait_for(lambda: live_sessions(address) == 0, 10)
    document.setModified(False)
    document.close()
    return result


def server_down(address: str, messages: list[str]) -> dict:
    """Live on against an address nobody serves: the docker says so, no message box."""
    from tether_krita import docker, plugin
    from tether_krita.settings import Settings

    messages.clear()
    document = Krita.instance().createDocument(64, 64, "down", "RGBA", "U8", "", 72.0)
    panel = docker.TetherDocker()
    started = plugin.instance().start_live(document, Settings(address=address))
    ended = wait_for(lambda: not plugin.instance().live.running, FRAME_TIMEOUT_S)
    result = {
        "started": started,
        "ended": ended,
        "status": panel.status.text(),
        "docker": buttons(panel),
        "alerts": list(messages),
        "layers": layer_names(document),
        "threads": live_threads(),
    }
    document.close()
    return result


def buttons(panel) -> dict:
    return {
        "live": panel.live_button.isChecked(),
        "apply": panel.apply_button.isEnabled(),
        "repaint": panel.repaint_button.isEnabled(),
    }


def live_sessions(address: str) -> int:
    import tether

    with tether.Client(address) as client:
        return client.server_info(timeout=10).live_sessions


def live_threads() -> list[str]:
    """The session's threads still alive, given a moment to finish their last lines."""
    threads = [t for t in threading.enumerate() if t.name.startswith("tether-live")]
    for thread in threads:
        thread.join(5)
    return [t.name for t in threads if t.is_alive()]


def dump(document, name: str, path: Path) -> None:
    node = next(n for n in document.rootNode().childNodes() if n.name() == name)
    path.write_bytes(bytes(node.pixelData(0, 0, document.width(), document.height())))


def picture(document, panel, path: Path) -> bool:
    """The canvas as Live shows it (3x, the live layer on top) beside the Tether docker as
    it looks then: the README's docs/krita_live.png is one of these. Drawn from the
    document's projection and the docker's widgets (grabbing the window itself hangs
    Krita 5.1 on Xvfb)."""
    zoom, gap = 3, 16
    canvas = document.projection(0, 0, document.width(), document.height())
    canvas = canvas.scaled(canvas.width() * zoom, canvas.height() * zoom)
    side = panel.widget()
    side.resize(side.sizeHint().expandedTo(QSize(340, 0)))
    docker_picture = side.grab()
    width = canvas.width() + gap * 3 + docker_picture.width()
    height = max(canvas.height(), docker_picture.height()) + gap * 2
    image = QImage(width, height, QImage.Format_RGB32)
    image.fill(QColor(49, 49, 49))  # Krita's dark theme
    painter = QPainter(image)
    painter.drawImage(gap, gap, canvas)
    painter.drawPixmap(canvas.width() + gap * 2, gap, docker_picture)
    painter.end()
    return image.save(str(path))


def settle() -> None:
    """Let the window's actions catch up with the undo stack."""
    for _ in range(10):
        QCoreApplication.processEvents(QEventLoop.AllEvents, 20)
