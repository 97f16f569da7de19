"""Live sessions: send frames as fast as the host renders them, get images back.

    config = tether.LiveConfig("a watercolour village", controls=[
        tether.Control("depth", None, weight=0.8, preprocessor=tether.Depth()),
    ])
    with client.live(config) as session:
        session.send(tether.LiveFrame(1, colour, controls=[depth]))
        for event in session:          # tether.LiveResult or tether.LiveError
            ...

A host may send faster than frames are served: the session writes a frame only when the
server has answered the one before, and then the newest one sent (latest wins; the others
count as dropped), so each result is as fresh as the server's speed allows. Frames are
paced by the results, so read them (iterate) while sending. Results name the frame they
answer. `tether.aio.Client.live` is the async twin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from . import images, protocol
from ._proto.tether.v1 import tether_pb2
from .errors import from_status
from .images import ImageInput
from .outbox import ThreadOutbox
from .protocol import OUTPUT_FORMATS, Control, Picture


@dataclass
class LiveConfig:
    """Settings of a live session. `controls` are units without images (image=None): each
    frame brings one image per unit, in order. steps 1 to 4; steps x strength must leave at
    least one step; guidance_scale <= 1 runs without classifier-free guidance (fast);
    width/height 0 take the frame's size; reuse_threshold > 0 lets a frame that differs from
    the last processed one by less (mean absolute difference, 0..1) reuse its output."""

    prompt: str
    negative_prompt: str = ""
    controls: Sequence[Control] = ()
    steps: int = 2
    strength: float = 0.5
    seed: int = 0
    guidance_scale: float = 1.0
    width: int = 0
    height: int = 0
    scheduler: str | None = None
    output_format: str = "raw"
    reuse_threshold: float = 0.0
    model: str | None = None

    def to_proto(self) -> tether_pb2.LiveConfig:
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format: must be one of {', '.join(OUTPUT_FORMATS)}")
        return tether_pb2.LiveConfig(
            model=self.model or "",
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            steps=self.steps,
            strength=self.strength,
            guidance_scale=self.guidance_scale,
            width=self.width,
            height=self.height,
            scheduler=self.scheduler or "",
            controls=[unit.to_proto(f"controls[{i}]") for i, unit in enumerate(self.controls)],
            output_format=OUTPUT_FORMATS[self.output_format],
            reuse_threshold=self.reuse_threshold,
        )


@dataclass
class LiveFrame:
    """One frame: its id (results name it), its colour image and one image per unit."""

    id: int
    image: ImageInput
    controls: Sequence[ImageInput] = field(default_factory=tuple)

    def to_proto(self) -> tether_pb2.LiveFrame:
        message = tether_pb2.LiveFrame()
        self.write(message)
        return message

    def write(self, message: tether_pb2.LiveFrame) -> None:
        """Fill `message` in place (see `images.write` for why)."""
        message.id = self.id
        images.write(message.image, self.image, "frame.image")
        for i, image in enumerate(self.controls):
            images.write(message.controls.add(), image, f"frame.controls[{i}]")


@dataclass(frozen=True)
class LiveResult(Picture):
    """The image for frame `frame_id`. `dropped`: frames of the session replaced by newer
    ones before they were processed; `latency_ms`: from the frame reaching the server to
    the result leaving it; `reused`: the previous output, sent again."""

    frame_id: int
    dropped: int
    latency_ms: float
    reused: bool


@dataclass(frozen=True)
class LiveError:
    """Frame `frame_id` (0: a config) could not be processed; the session goes on."""

    frame_id: int
    message: str


LiveEvent = LiveResult | LiveError


def config_request(config: LiveConfig) -> tether_pb2.LiveRequest:
    return tether_pb2.LiveRequest(config=config.to_proto())


def frame_request(frame: LiveFrame) -> tether_pb2.LiveRequest:
    request = tether_pb2.LiveRequest()
    frame.write(request.frame)
    return request


def event_from_proto(event: tether_pb2.LiveEvent, dropped_here: int = 0) -> LiveEvent:
    """`dropped_here`: frames the client replaced before they were sent, added to the
    server's count so that answered + dropped = sent."""
    if event.WhichOneof("event") == "error":
        return LiveError(frame_id=event.error.frame_id, message=event.error.message)
    result = event.result
    return LiveResult(
        frame_id=result.frame_id,
        dropped=result.dropped + dropped_here,
        latency_ms=result.latency_ms,
        reused=result.reused,
        **protocol.picture_fields(result.image),
    )


class LiveSession:
    """A live session (see the module docstring). `send` and `configure` return at once;
    `close` says no more frames, and iteration ends after the last result."""

    def __init__(self, stub: Any, metadata: tuple, config: LiveConfig) -> None:
        self._outbox = ThreadOutbox()
        self._outbox.put(config_request(config))
        # grpc's own thread takes messages from the outbox as the connection allows, until
        # the outbox ends the stream, which it does at the latest when the call ends.
        self._call = stub.Live(self._outbox.requests(), metadata=metadata)
        if not self._call.add_callback(self._outbox.cancel):
            self._outbox.cancel()  # it ended already

    def send(self, frame: LiveFrame) -> None:
        self._outbox.put(frame_request(frame))

    def configure(self, config: LiveConfig) -> None:
        """A new config, for the frames processed after it."""
        self._outbox.put(config_request(config))

    def close(self) -> None:
        self._outbox.close()

    def cancel(self) -> None:
        """End the session now, results in flight and a frame waiting to be sent included."""
        self._outbox.cancel()
        self._call.cancel()

    def __iter__(self) -> Iterator[LiveEvent]:
        try:
            for event in self._call:
                self._outbox.answered(event)
                yield event_from_proto(event, self._outbox.dropped)
        except grpc.RpcError as error:
            raise from_status(error.code(), error.details()) from None

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
