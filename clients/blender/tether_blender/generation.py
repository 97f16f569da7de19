"""A running job as Blender sees it: progress, the live image, the finished picture.

Blender's data may only be touched on the main thread, and the UI must keep drawing while
the server works, so the work runs as a `tether.background.Job` on a worker thread. Its
events are applied on the main thread by `tick()`, which `bpy.app.timers` calls every
`TICK_SECONDS` while a job runs (or a script's waiting loop calls, see the operators'
``wait`` option). One job runs at a time: a `Generation` (Generate) here, a
`baking.Bake` (Bake Texture) or a `tileable.TileableMaterial`.
"""

from __future__ import annotations

from typing import Any

import bpy
import tether
from tether import background

from . import images
from .connection import ClientConfig, describe, open_client
from .plan import Plan
from .projection import apply_projection

__all__ = [
    "TICK_SECONDS",
    "Generation",
    "Run",
    "current",
    "last",
    "on_load_pre",
    "start",
    "stop_all",
    "tick",
]

TICK_SECONDS = 0.1
IMAGE_NAME = "Tether Result"


class Run:
    """A job from start to finish as the panel and the timer see it: what Generate and
    Bake Texture have in common. All attributes are read by the panel."""

    def __init__(self, config: ClientConfig, steps: int, width: int, height: int) -> None:
        self.config = config
        self.job = background.Job(
            self._work, describe=lambda error: describe(error, config), name="tether-job"
        )
        self.width, self.height = width, height
        self.queue_position: int | None = None
        self.step = 0
        self.total = steps
        self.previews = 0
        self.image_title = IMAGE_NAME  # the name the job's picture gets
        self.image_name: str | None = None  # the name it got (Blender may number it)
        self.warnings: list[str] = []
        self.error: str | None = None
        self.cancelled = False
        self.finished = False

    def _work(self, task: background.Task) -> Any:
        """The job's work, on the worker thread: no bpy here."""
        raise NotImplementedError

    def _finish(self, value: Any) -> None:
        """Apply what the work returned (on the main thread)."""
        raise NotImplementedError

    def outcome(self) -> tuple[str, str]:
        """(report level, message) describing how the job ended."""
        raise NotImplementedError

    def progress(self) -> str:
        """What the panel shows while the job runs."""
        if self.queue_position is not None:
            return f"Queued, {self.queue_position} ahead"
        return f"Step {self.step} / {self.total}"

    def start(self) -> None:
        self.job.start()

    def cancel(self) -> None:
        self.job.cancel()

    def tick(self) -> bool:
        """Apply the events that arrived; True while the job is still running."""
        for event in self.job.poll():
            try:
                self._apply(event)
            except Exception as error:
                # Blender refused a change (e.g. a file could not be written). Whatever it
                # was, it must end up in the report, not as a traceback that leaves the
                # job running and the panel stuck.
                self.error = f"Applying the result failed: {type(error).__name__}: {error}"
                self.job.cancel()
        if self.job.done:
            self.finished = True
        return not self.finished

    def _apply(self, event: Any) -> None:
        if isinstance(event, tether.Queued):
            self.queue_position = event.position
        elif isinstance(event, tether.Progress):
            self.queue_position = None
            self.step, self.total = event.step, event.total
            if event.preview is not None:
                images.write_rgb(self._image(), event.preview)
                self.previews += 1
        elif isinstance(event, background.Done):
            self._finish(event.value)
        elif isinstance(event, background.Failed):
            self.error = event.message
        elif isinstance(event, background.Stopped):
            self.cancelled = True

    def _image(self) -> bpy.types.Image:
        """The job's picture, made on first use (so a job that fails before its first
        picture leaves no image behind); remade if the user deleted it meanwhile."""
        image = bpy.data.images.get(self.image_name) if self.image_name else None
        if image is None:
            image = images.new_result_image(self.image_title, self.width, self.height)
            self.image_name = image.name
            images.show_in_image_editors(image)
        return image


class Generation(Run):
    """Generate: one picture from the active camera, optionally projected onto meshes."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan.config, int(plan.options["steps"]), plan.width, plan.height)
        self.plan = plan
        self.seed: int | None = None
        self.saved_to: str | None = None
        self.projected_onto: list[str] = []

    def _work(self, task: background.Task) -> tether.Result:
        with open_client(self.plan.config) as client:
            return task.generate(client, self.plan.prompt, **self.plan.options)

    def outcome(self) -> tuple[str, str]:
        if self.error:
            return "ERROR", self.error
        if self.cancelled:
            return "WARNING", "Tether: generation cancelled"
        parts = [f"Tether: done, seed {self.seed}, image {self.image_name!r} {self.saved_to}"]
        if self.projected_onto:
            parts.append(f"projected onto {', '.join(self.projected_onto)}")
        parts.extend(self.warnings)
        return ("WARNING" if self.warnings else "INFO"), "; ".join(parts)

    def _finish(self, result: tether.Result) -> None:
        self.seed = result.seed
        self.step = self.total
        image = self._image()
        images.write_rgb(image, result.image)
        image["tether_seed"] = str(result.seed)  # seeds are 64-bit; ID properties 32-bit
        image["tether_prompt"] = self.plan.prompt
        self.saved_to = images.save_or_pack(image, f"tether_{result.seed}")
        if self.plan.targets:
            objects = [bpy.data.objects.get(name) for name in self.plan.targets]
            missing = [n for n, o in zip(self.plan.targets, objects, strict=True) if o is None]
            present = [o for o in objects if o is not None]
            material, skipped = apply_projection(present, image, self.plan.camera)
            self.projected_onto = [o.name for o in present if o.name not in skipped]
            if skipped or missing:
                self.warnings.append(
                    f"not projected onto {', '.join(skipped + missing)} (not meshes, "
                    "deleted, or no room for another UV map)"
                )


_current: Run | None = None
_last: Run | None = None


def current() -> Run | None:
    """The running job (Generation or Bake), if any."""
    return _current


def last() -> Run | None:
    """The job that finished last (successfully or not), if any."""
    return _last


def start(run: Run) -> Run:
    """Start the job's worker thread. The caller drives `tick()`: registers it as a timer,
    or calls it in a loop."""
    global _current
    if _current is not None:
        raise RuntimeError("a job is already running")
    _current = run
    run.start()
    return run


def tick(*, report: bool = True) -> float | None:
    """Apply the running job's events. The timer callback: returns the seconds until the
    next call, or None when the job has ended (which also unregisters the timer). With
    ``report``, the outcome is reported in Blender's status bar and Info log."""
    global _current, _last
    run = _current
    if run is None:
        return None
    running = run.tick()
    _redraw()
    if running:
        return TICK_SECONDS
    _current, _last = None, run
    if report:
        level, message = run.outcome()
        _report(level, message)
    return None


def stop_all() -> None:
    """Cancel a running job and forget all generations: when the add-on is disabled, or
    another file is opened (their images and objects belong to the old file)."""
    global _current, _last
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if _current is not None:
        _current.cancel()
    _current = _last = None


@bpy.app.handlers.persistent
def on_load_pre(*_args: object) -> None:
    """bpy.app.handlers.load_pre callback. Blender drops non-persistent timers when a file
    loads, so without this a running job would never be ticked again and Generate would
    stay disabled."""
    stop_all()


def _report(level: str, message: str) -> None:
    # Timers have no operator to call self.report on; a small internal operator does it,
    # so that the message reaches the status bar and the Info log like any report.
    try:
        bpy.ops.tether.report(level=level, message=message)
    except (RuntimeError, AttributeError):
        print(f"Tether {level.lower()}: {message}")


def _redraw() -> None:
    window_manager = bpy.context.window_manager
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "PROPERTIES"}:
                area.tag_redraw()
