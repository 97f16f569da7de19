"""`tether bridge` as a command: its options, and the server's door rule — beyond loopback
nobody gets in without the bridge's own token, unless `--insecure` says so."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from bridge_harness import RECEIVE_TIMEOUT_S, BridgeProcess, Host
from tether import bridge
from websockets.exceptions import InvalidStatus

TOKEN = "bridge-test-token"


def test_options() -> None:
    parser = argparse.ArgumentParser()
    bridge.add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.server, defaults.host, defaults.port) == ("127.0.0.1:50051", "127.0.0.1", 8765)
    assert (defaults.token, defaults.tls) == (os.environ.get("TETHER_TOKEN"), False)
    assert (defaults.bridge_token, defaults.insecure) == (
        os.environ.get("TETHER_BRIDGE_TOKEN"),
        False,
    )
    custom = parser.parse_args(
        ["--tls", "ca.pem", "--token", "t", "--allow-origin", "*", "--bridge-token", "b"]
    )
    assert (custom.tls, custom.token, custom.allow_origin) == ("ca.pem", "t", ["*"])
    assert custom.bridge_token == "b"


@pytest.mark.parametrize("command", [["-m", "tether.bridge"], ["-m", "tether", "bridge"]])
@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "example.org"])
def test_a_non_loopback_bridge_without_a_token_refuses_to_start(
    command: list[str], host: str
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TETHER_BRIDGE_TOKEN"}
    done = subprocess.run(
        [sys.executable, *command, "--host", host, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr  # one line
    assert done.stderr.startswith(f"tether bridge: refusing to listen on {host} without")
    assert "--bridge-token" in done.stderr and "--insecure" in done.stderr


def test_insecure_lets_a_non_loopback_bridge_start_open(server: str) -> None:
    running = BridgeProcess("--server", server, "--host", "0.0.0.0", "--insecure")
    try:
        with Host.connect(running.address) as host:
            host.config()
            assert host.process(1).frame_id == 1
    finally:
        running.stop()


@pytest.fixture(scope="module")
def guarded(server: str) -> Iterator[str]:
    """A bridge on every interface with a token, given the way a service would: in the
    environment."""
    running = BridgeProcess(
        "--server", server, "--host", "0.0.0.0", env={"TETHER_BRIDGE_TOKEN": TOKEN}
    )
    yield running.address
    running.stop()


@pytest.mark.parametrize(
    "path, headers, refusal",
    [
        ("/live", {}, "needs its token"),
        ("/viewer", {}, "needs its token"),
        ("/live", {"Authorization": "Bearer wrong"}, "wrong bridge token"),
        ("/live?token=wrong", {}, "wrong bridge token"),
        ("/viewer?token=", {}, "needs its token"),
        ("/live", {"Authorization": f"Basic {TOKEN}"}, "needs its token"),
    ],
)
def test_a_missing_or_wrong_token_is_refused_at_the_handshake(
    guarded: str, path: str, headers: dict[str, str], refusal: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        with Host.connect(guarded, path, additional_headers=headers):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert refusal in response.body.decode()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_right_token_opens_the_door(guarded: str) -> None:
    with Host.connect(guarded, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as host:
        host.config()
        assert host.process(1).frame_id == 1
    # Browsers cannot set headers on a WebSocket: the viewer page sends ?token=.
    with Host.connect(guarded, f"/viewer?token={TOKEN}") as viewer:
        status = json.loads(viewer.ws.recv(timeout=RECEIVE_TIMEOUT_S))
        assert status["type"] == "status"
    with Host.connect(guarded, f"/live?token={TOKEN}") as host:
        host.config()
        assert host.process(2).frame_id == 2
