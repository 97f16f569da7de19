"""Real Krita for the tests: Debian 12's Krita 5.1.5 running one scenario module headless
(`kritarunner -s MODULE`, which calls the module's `__main__(args)`) with the plugin
assembled the way build.py ships it (package + SDK + vendored grpcio/protobuf/numpy for
linux-x86_64-cp311), so every run also proves the vendored libraries load in Krita's
own Python. The scenario reads its cases from the JSON file named by
$TETHER_KRITA_SCENARIO and writes report.json into the folder named there as "out".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from plugin_build import load_build

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_DIR = ROOT / "tests" / "krita"
SETUP = ROOT / "clients" / "krita" / "setup_test_env.sh"
KEY = "linux-x86_64-cp311"  # Debian 12's Krita runs the system Python 3.11
KRITA_TIMEOUT_S = 240


def prepare_plugin(base: Path) -> tuple[Path, Path]:
    """Run clients/krita/setup_test_env.sh (idempotent: installs Krita and Xvfb from
    Debian when missing, fetches the wheels) and assemble the plugin under `base`.
    Returns (plugin folder for PYTHONPATH, the vendored libraries' folder)."""
    setup = subprocess.run(
        ["bash", str(SETUP)],
        env={**os.environ, "PYTHON": sys.executable},  # build.py runs on the tests' Python
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert setup.returncode == 0, f"{SETUP.name} failed:\n{setup.stdout}{setup.stderr}"[-3000:]
    build = load_build()
    _, requirements = build.project()
    vendor = build.vendor_target(build.TARGETS[KEY], build.DEFAULT_CACHE, requirements)
    return build.assemble(base / "plugin", {KEY: vendor}, link=True), vendor


def krita_home(tmp_path_factory: Any) -> Path:
    """One home folder for every Krita run of a test session: Krita writes its settings
    and its resource cache there (not in ~), and building that cache is most of the time
    a first start takes."""
    return tmp_path_factory.getbasetemp() / "krita-home"


def run_scenario(
    module: str, config: dict, base: Path, plugin_tree: Path, home: Path, window: bool = False
) -> dict:
    """Run tests/krita/MODULE.py in Krita with `config` (its "out" folder is made) and
    return its report. `window`: run on a virtual X display (Xvfb) instead of Qt's
    offscreen platform, so that the scenario can open a Krita window: Krita's undo
    action needs a view, and opening a window offscreen crashes Krita 5.1."""
    out = Path(config["out"])
    out.mkdir(parents=True)
    (base / f"{module}.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_tree), str(SCENARIO_DIR)]),
        "TETHER_KRITA_SCENARIO": str(base / f"{module}.json"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
    }
    (home / "runtime").mkdir(parents=True, exist_ok=True)
    (home / "runtime").chmod(0o700)
    command = ["kritarunner", "-s", module]
    if window:
        command = ["xvfb-run", "--auto-servernum", *command]
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    # A session of its own, ended with everything in it once the run is over: xvfb-run can
    # leave Xvfb behind (when Krita crashes while quitting), and kills neither Xvfb nor
    # Krita when it is killed itself at the timeout.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=KRITA_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _end_session(process.pid)
        output, _ = process.communicate()
        raise AssertionError(f"Krita ran past {KRITA_TIMEOUT_S} s:\n{output[-3000:]}") from None
    _end_session(process.pid)
    # Not the exit status: Krita 5.1 may crash while quitting after a window was open.
    report_path = out / "report.json"
    assert report_path.is_file(), f"Krita wrote no report:\n{output[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report["error"]
    return report


def _end_session(session: int) -> None:
    """Kill what is left of the process group `session` (the run's own)."""
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left
