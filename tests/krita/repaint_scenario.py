"""Runs inside real Krita, headless: `kritarunner -s repaint_scenario` with this folder and
the built plugin on PYTHONPATH and QT_QPA_PLATFORM=offscreen. Driven by
tests/test_krita_real.py through a JSON file named by $TETHER_KRITA_SCENARIO:

    {"out": folder, "address": "127.0.0.1:PORT", "catalog": "127.0.0.1:PORT",
     "cases": [{"name", "kind", ...}, ...]}

"catalog" is a server with a LoRA and a small one-pass limit, for the cases that say
"catalog": true.

Each case makes a document, runs the plugin the way the Repaint action does
(`plugin.instance().repaint(document, settings)`, with Krita's event loop turning), saves
a .kra, opens it again and dumps raw pixels and a report (report.json) for pytest to
check. This script checks nothing itself: it records what Krita did.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import traceback
from pathlib import Path

from krita import Krita, Selection
from PyQt5.QtCore import QCoreApplication, QEventLoop

JOB_TIMEOUT_S = 90


def __main__(args: list[str]) -> None:  # noqa: N807 - kritarunner's entry point
    config = json.loads(Path(os.environ["TETHER_KRITA_SCENARIO"]).read_text())
    out = Path(config["out"])
    report: dict = {"cases": {}, "python": sys.version}
    try:
        import tether_krita  # noqa: F401 - bootstraps the vendored libraries, registers
        from tether_krita import bootstrap, plugin

        report["platform_key"] = bootstrap.platform_key()
        report["tether"] = __import__("tether").__file__
        report["tether_background"] = __import__("tether.background").background.__file__
        report["numpy"] = __import__("numpy").__file__
        messages: list[str] = []
        # Fresh state, and alerts recorded instead of a message box nobody could close.
        plugin._plugin = plugin.Plugin(alert=messages.append)
        for case in config["cases"]:
            messages.clear()
            report["cases"][case["name"]] = run_case(case, config, out, messages)
    except Exception:  # noqa: BLE001 - the report carries it to pytest
        report["error"] = traceback.format_exc()
    (out / "report.json").write_text(json.dumps(report, indent=2))


def run_case(case: dict, config: dict, out: Path, messages: list[str]) -> dict:
    from tether_krita import plugin
    from tether_krita.settings import Settings

    name = case["name"]
    result: dict = {}
    import tether

    address = config["catalog"] if case.get("catalog") else config["address"]
    settings = Settings(
        address=case.get("address", address),
        prompt=case.get("prompt", "a red apple"),
        steps=case.get("steps", 4),
        seed=1,
        show_edges=case.get("show_edges", False),
        loras=tuple(tether.Lora(name, weight) for name, weight in case.get("loras", [])),
    )
    if case["kind"] == "no-document":
        result["started"] = plugin.instance().repaint(document=None, settings=settings)
        result["alerts"] = list(messages)
        return result
    if case["kind"] == "docker":
        return exercise_docker(settings)
    if case["kind"] == "pickers":
        return exercise_pickers(settings)
    if case["kind"] == "fallback":
        # What Krita shows instead of a traceback when the libraries do not load.
        from tether_krita import registration

        panel = registration.problem_docker(case["problem"])()
        return {"label": panel.widget().text()}

    width, height = case.get("size", (192, 144))
    document = Krita.instance().createDocument(
        width, height, name, "RGBA", case.get("depth", "U8"), case.get("profile", ""), 72.0
    )
    document.setBatchmode(True)
    fill_background(document)
    selection_mask = make_selection(document, case.get("selection", "disc"))
    (out / f"{name}-selection.raw").write_bytes(selection_mask)
    before = bytes(document.pixelData(0, 0, width, height))
    (out / f"{name}-before.raw").write_bytes(before)

    started = plugin.instance().repaint(document=document, settings=settings)
    result["started"] = started
    if started and case["kind"] == "cancel":
        wait_for(lambda: document_has_preview(document), JOB_TIMEOUT_S)
        result["layers_during_job"] = layer_names(document)
        plugin.instance().cancel()
    result["finished_in_time"] = wait_for(
        lambda: not plugin.instance().controller.running, JOB_TIMEOUT_S
    )
    result["alerts"] = list(messages)
    result["last_message"] = plugin.instance().last_message
    result["layers_in_session"] = layer_names(document)
    result["untouched"] = bytes(document.pixelData(0, 0, width, height)) == before

    path = out / f"{name}.kra"
    result["saved"] = bool(document.saveAs(str(path)))
    document.waitForDone()
    document.close()
    result.update(dump_saved(path, out, name, width, height))
    return result


def exercise_docker(settings) -> dict:
    """Build the docker outside a window (kritarunner has none), fill it from settings,
    read them back, and let it fetch the server's models through its background call."""
    from tether_krita import docker

    panel = docker.TetherDocker()
    panel._load(settings)
    read_back = panel.settings()
    panel.refresh_models()
    arrived = wait_for(lambda: panel.refresh.isEnabled(), JOB_TIMEOUT_S)
    models = [panel.model.itemText(i) for i in range(panel.model.count())]
    return {
        "settings_round_trip": read_back == settings,
        "models_arrived": arrived,
        "models": models,
        "status": panel.status.text(),
        "repaint_enabled": panel.repaint_button.isEnabled(),
    }


def exercise_pickers(settings) -> dict:
    """Fill the docker's model and LoRA pickers from a server with a LoRA, pick the LoRA
    with a weight and a tiling, and read what Krita's settings store then holds."""
    from tether_krita import docker, plugin

    panel = docker.TetherDocker()
    panel._load(settings)
    panel.refresh_models()
    arrived = wait_for(lambda: panel.refresh.isEnabled(), JOB_TIMEOUT_S)
    name, weight = panel.loras[0]
    offered = [name.itemText(i) for i in range(name.count())]
    name.setCurrentIndex(name.findText("detail"))
    weight.setValue(0.7)
    panel.tiling.setCurrentIndex(panel.tiling.findData("xy"))
    stored = plugin.load_settings()
    return {
        "models_arrived": arrived,
        "models": [panel.model.itemText(i) for i in range(panel.model.count())],
        "loras": offered,
        "status": panel.status.text(),
        "stored_loras": [[lora.name, lora.weight] for lora in stored.loras],
        "stored_tiling": stored.tiling,
        "docker_round_trip": panel.settings() == stored,
    }


def fill_background(document) -> None:
    """A checkerboard: structure the canny preprocessor finds edges in."""
    width, height = document.width(), document.height()
    depth = document.colorDepth()
    bright = pixel(depth, (0.9, 0.8, 0.2))
    dark = pixel(depth, (0.1, 0.2, 0.6))
    rows = []
    for y in range(height):
        cells = [bright if ((x // 16) + (y // 16)) % 2 else dark for x in range(width)]
        rows.append(b"".join(cells))
    document.rootNode().childNodes()[0].setPixelData(b"".join(rows), 0, 0, width, height)
    document.refreshProjection()


def pixel(depth: str, rgb: tuple[float, float, float]) -> bytes:
    """One opaque RGBA pixel in Krita's layout: U8/U16 are B, G, R, A integers, F16/F32
    R, G, B, A floats (the values are written as they are, whatever the profile)."""
    r, g, b = rgb
    if depth == "U8":
        return bytes([round(b * 255), round(g * 255), round(r * 255), 255])
    if depth == "U16":
        return struct.pack("<4H", round(b * 65535), round(g * 65535), round(r * 65535), 65535)
    if depth == "F16":
        return struct.pack("<4e", r, g, b, 1.0)
    return struct.pack("<4f", r, g, b, 1.0)


def make_selection(document, shape: str) -> bytes:
    """Select a disc, a rectangle ("rect") or nothing ("empty") and return the selection
    over the canvas."""
    width, height = document.width(), document.height()
    cx, cy, radius = width * 0.45, height * 0.5, min(width, height) * 0.3
    data = bytearray(width * height)
    if shape == "disc":
        for y in range(height):
            for x in range(width):
                if (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= radius**2:
                    data[y * width + x] = 255
    elif shape == "rect":  # 160 x 120 (on the tests' 192 x 144 canvas)
        for y in range(12, 132):
            data[y * width + 16 : y * width + 176] = b"\xff" * 160
    selection = Selection()
    selection.resize(width, height)
    selection.setPixelData(bytes(data), 0, 0, width, height)
    document.setSelection(selection)
    current = document.selection()
    if current is None:
        return bytes(width * height)
    return bytes(current.pixelData(0, 0, width, height))


def wait_for(condition, timeout: float) -> bool:
    """Turn Krita's event loop (the plugin's QTimer polls the job) until `condition`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)
    return True


def document_has_preview(document) -> bool:
    return any(name.endswith("(painting…)") for name in layer_names(document))


def layer_names(document) -> list[str]:
    return [node.name() for node in document.rootNode().childNodes()]


def dump_saved(path: Path, out: Path, name: str, width: int, height: int) -> dict:
    """Open the saved .kra like a user would and dump what is in it."""
    document = Krita.instance().openDocument(str(path))
    if document is None:
        return {"reopened": False}
    document.setBatchmode(True)
    document.waitForDone()
    layers = []
    for index, node in enumerate(document.rootNode().childNodes()):
        data = bytes(node.pixelData(0, 0, width, height))
        (out / f"{name}-layer{index}.raw").write_bytes(data)
        layers.append({"name": node.name(), "type": node.type(), "blending": node.blendingMode()})
    document.refreshProjection()
    (out / f"{name}-after.raw").write_bytes(bytes(document.pixelData(0, 0, width, height)))
    info = {
        "reopened": True,
        "layers": layers,
        "depth": document.colorDepth(),
        "profile": document.colorProfile(),
    }
    document.close()
    return info
