"""One live session, from the canvas's bytes to the bytes of the live layer.

The GUI thread reads the canvas over a fixed region whenever the user changed it and
hands the raw bytes to `LiveLink.send`; the link's two threads do the rest, never touching
Krita:

1. The session thread (a `tether.background.Job`) asks for the models, plans size and
   canny unit as a repaint does (`job.prepare`), opens the Live RPC with the first frame,
   then reads the results and turns each into layer bytes masked to the selection.
2. The frame thread converts what the GUI thread handed over, newest first (a frame not
   yet taken is replaced by a newer one), and sends it; settings changes go out before it.

The SDK writes a frame only once the server has answered the one before, so the server
always paints the newest canvas. `stop` cancels the call; both threads have ended when
the job reports `Stopped`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

import tether
from tether import background

from .job import MODELS_TIMEOUT_S, Prepared, Snapshot, layer_bytes, model_image, prepare
from .messages import describe
from .settings import RANDOM_SEED, Settings

FIRST_FRAME = 1  # the canvas as it was when Live was turned on
SEEDS = 2**31  # a random session seed is drawn below this (what the docker can show)


@dataclass(frozen=True)
class LiveStarted:
    """The session is open; frames are painted at width x height with `seed`."""

    width: int
    height: int
    seed: int


@dataclass(frozen=True)
class LivePainted:
    """The server's image for frame `frame_id`, as the live layer's bytes over the region."""

    frame_id: int
    pixels: bytes


@dataclass(frozen=True)
class LiveRefused:
    """The server could not paint frame `frame_id` (0: it refused new settings); the
    session goes on. `message` is a sentence for the user."""

    frame_id: int
    message: str


def live_config(settings: Settings, plan: Prepared, seed: int) -> tether.LiveConfig:
    """The session's config: img2img of each frame at the plan's size, with one canny unit
    whose edges the server finds in the frame's own colour image."""
    edges = tether.Control(
        plan.canny_model,
        None,  # each frame brings the image
        weight=settings.edge_weight,
        preprocessor=tether.Canny(settings.edge_low, settings.edge_high),
    )
    return tether.LiveConfig(
        settings.prompt,
        negative_prompt=settings.negative_prompt,
        controls=[edges],
        steps=settings.live_steps,
        strength=settings.strength,
        seed=seed,
        width=plan.width,
        height=plan.height,
        model=settings.model or None,
        loras=settings.loras,
        tiling=settings.tiling or None,
    )


def refusal(error: tether.LiveError) -> str:
    """A LiveError from the server, as a sentence."""
    if error.frame_id == 0:
        return (
            "The Tether server refused the new live settings and keeps the last good ones: "
            f"{error.message}"
        )
    return f"The Tether server could not paint the canvas: {error.message}"


class _Mailbox:
    """What the GUI thread handed over and the frame thread has not taken yet: the newest
    frame and the newest settings (each replaces the one before), or the end."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: tuple[int, bytes] | None = None
        self._settings: Settings | None = None
        self._closed = False

    def put_frame(self, frame_id: int, data: bytes) -> None:
        with self._condition:
            self._frame = (frame_id, data)
            self._condition.notify()

    def put_settings(self, settings: Settings) -> None:
        with self._condition:
            self._settings = settings
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()

    def take(self) -> tuple[Settings | None, tuple[int, bytes] | None] | None:
        """Wait for settings or a frame (either may be None); None once closed."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._closed or self._frame is not None or self._settings is not None
            )
            if self._closed:
                return None
            taken = (self._settings, self._frame)
            self._settings, self._frame = None, None
            return taken


class LiveLink:
    """A live session for the canvas in `snapshot` (its region, selection and pixel format;
    its pixels are the first frame). `job` is not started; it closes `client` when it ends.
    Its events: LiveStarted, then LivePainted and LiveRefused, then `background.Failed`,
    `background.Stopped` (after `stop`) or `background.Done` (the server ended the
    session)."""

    def __init__(self, client: Any, snapshot: Snapshot, settings: Settings) -> None:
        self._client = client
        self._snapshot = snapshot
        self._settings = settings
        # One seed for the whole session: the same noise every frame keeps results stable.
        self._random_seed = random.randrange(SEEDS)
        self._mailbox = _Mailbox()
        self._lock = threading.Lock()
        self._session: tether.LiveSession | None = None
        self._frame_error: Exception | None = None
        self.job = background.Job(
            self._work, describe=lambda error: describe(error, settings.address), name="tether-live"
        )

    def send(self, frame_id: int, data: bytes) -> None:
        """The canvas's bytes over the region, as frame `frame_id` (ids increase)."""
        self._mailbox.put_frame(frame_id, data)

    def configure(self, settings: Settings) -> None:
        """New prompt, strength, steps, seed or edge settings for the frames after this."""
        self._mailbox.put_settings(settings)

    def stop(self) -> None:
        """End the session now; the job then reports `Stopped`. Any thread."""
        self.job.cancel()
        with self._lock:
            session = self._session
        if session is not None:
            session.cancel()
        self._mailbox.close()

    def _seed(self, settings: Settings) -> int:
        return self._random_seed if settings.seed == RANDOM_SEED else settings.seed

    def _work(self, task: background.Task) -> None:
        try:
            models = self._client.models(timeout=MODELS_TIMEOUT_S)
            # Frames are painted in one pass each, at the model's size, whatever the region.
            plan = prepare(self._snapshot, self._settings, models, tiles=False)
            with self._lock:
                # Checked under the lock `stop` takes: a stop from now on finds the session.
                task.raise_if_cancelled()
                seed = self._seed(self._settings)
                session = self._client.live(live_config(self._settings, plan, seed))
                self._session = session
            session.send(tether.LiveFrame(FIRST_FRAME, plan.image, controls=[plan.image]))
            task.emit(LiveStarted(plan.width, plan.height, seed))
            self._run(task, session, plan)
        finally:
            self._client.close()

    def _run(self, task: background.Task, session: tether.LiveSession, plan: Prepared) -> None:
        frames = threading.Thread(
            target=self._send_frames, args=(session, plan), name="tether-live-frames", daemon=True
        )
        frames.start()
        fmt = self._snapshot.fmt
        try:
            for event in session:
                if isinstance(event, tether.LiveResult):
                    pixels = layer_bytes(event.image, plan, fmt)
                    task.emit(LivePainted(event.frame_id, pixels))
                else:
                    task.emit(LiveRefused(event.frame_id, refusal(event)))
        except tether.Cancelled:
            if self._frame_error is None:
                raise
            # Else the frame thread cancelled the call after failing: its error is the news.
        finally:
            self._mailbox.close()
            session.cancel()  # a no-op unless reading stopped on an error
            frames.join()
        if self._frame_error is not None:
            raise self._frame_error

    def _send_frames(self, session: tether.LiveSession, plan: Prepared) -> None:
        region, fmt = self._snapshot.region, self._snapshot.fmt
        try:
            while (taken := self._mailbox.take()) is not None:
                settings, frame = taken
                if settings is not None:
                    session.configure(live_config(settings, plan, self._seed(settings)))
                if frame is not None:
                    frame_id, data = frame
                    image = model_image(data, region, fmt, plan.width, plan.height)
                    session.send(tether.LiveFrame(frame_id, image, controls=[image]))
        except Exception as error:  # noqa: BLE001 - the session thread reports it
            self._frame_error = error
            session.cancel()
