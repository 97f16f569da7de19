"""The bridge's viewer page (sdk/tether/bridge/viewer.html) in headless Chromium, in front
of a bridge with a token and a real server: it reads the result messages of
protos/bridge.md and shows their pixels and numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bridge_harness import SIZE, BridgeProcess, Host
from chromium import Chromium

TOKEN = "viewer-test-token"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


@pytest.fixture
def bridge_address(server: str) -> Iterator[str]:
    running = BridgeProcess("--server", server, "--bridge-token", TOKEN)
    yield running.address
    running.stop()


def text(element_id: str) -> str:
    return f"document.getElementById({element_id!r}).textContent"


def canvas(chromium: Chromium) -> np.ndarray:
    rgba = chromium.evaluate(
        "Array.from(document.getElementById('view').getContext('2d')"
        f".getImageData(0, 0, {SIZE}, {SIZE}).data)"
    )
    return np.array(rgba, dtype=np.uint8).reshape(SIZE, SIZE, 4)


def test_viewer_page_shows_live_frames_in_chromium(chromium: Chromium, bridge_address: str) -> None:
    # Without the bridge's token the page cannot connect, and says where the token goes.
    chromium.call("Page.navigate", url=f"http://{bridge_address}/")
    chromium.wait_for(f"{text('error')}.includes('?token=')")
    assert chromium.evaluate(text("state")) == "disconnected"
    chromium.call("Page.navigate", url=f"http://{bridge_address}/?token={TOKEN}")
    chromium.wait_for(f"{text('state')} === 'connected'")
    with Host.connect(bridge_address, additional_headers=AUTHORIZATION) as host:
        host.config()
        chromium.wait_for(f"{text('hosts')} === '1'")
        last = [host.process(frame_id) for frame_id in range(1, 5)][-1]
        chromium.wait_for(f"{text('frame-id')} === '4' && {text('frames')} === '4'")
        fps = chromium.evaluate(text("fps"))  # over the last 5 s: "-" on a very busy machine
        assert fps == "-" or float(fps) > 0, fps
        # Shown with one decimal: the numbers of the last result's header.
        assert float(chromium.evaluate(text("lag"))) == pytest.approx(last.lag_ms, abs=0.051)
        latency = float(chromium.evaluate(text("latency")))
        assert latency == pytest.approx(last.latency_ms, abs=0.051)
        assert chromium.evaluate(text("size")) == f"{SIZE}x{SIZE}"
        # The canvas holds the last result's pixels exactly.
        shown = canvas(chromium)
        assert np.array_equal(shown[..., :3], last.image) and (shown[..., 3] == 255).all()
        # An encoded result goes through the browser's own decoder.
        host.config(output_format="png")
        png = host.process(5)
        chromium.wait_for(f"{text('frame-id')} === '5'")
        assert png.format == "png" and np.array_equal(canvas(chromium)[..., :3], png.image)
    chromium.wait_for(f"{text('hosts')} === '0'")  # the page saw the host go
