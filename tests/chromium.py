"""Headless Chromium driven over the DevTools protocol, for tests of web pages.

Needs `chromium`: when it is missing, clients/godot/setup_test_env.sh installs it from
Debian's packages (idempotent; `make hosts` runs it too).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import ROOT
from websockets.sync.client import connect

SETUP_CHROMIUM = ROOT / "clients" / "godot" / "setup_test_env.sh"
REPLY_TIMEOUT_S = 30


class Chromium:
    """Headless Chromium driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        executable = shutil.which("chromium")
        if executable is None:
            subprocess.run(["bash", str(SETUP_CHROMIUM)], check=True, capture_output=True)
            executable = shutil.which("chromium")
        assert executable, "clients/godot/setup_test_env.sh did not install chromium"
        self.log = profile.parent / "chromium.log"
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.process.poll() is None, f"chromium exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            targets = json.load(response)
        page = next(target for target in targets if target["type"] == "page")
        self.exits = contextlib.ExitStack()
        self.devtools = self.exits.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None)
        )
        self.calls = 0

    def call(self, method: str, **params: object) -> dict:
        self.calls += 1
        self.devtools.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            reply = json.loads(self.devtools.recv(timeout=REPLY_TIMEOUT_S))
            if reply.get("id") == self.calls:  # skip events
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = REPLY_TIMEOUT_S) -> object:
        """Poll until `expression` is truthy; until the page has loaded it may throw."""
        guarded = f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()"
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(guarded)):
            assert time.monotonic() < deadline, f"never true in the page: {expression}"
            time.sleep(0.05)
        return value

    def close(self) -> None:
        self.exits.close()
        self.process.terminate()
        self.process.wait(timeout=30)
