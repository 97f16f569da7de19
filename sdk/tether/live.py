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

from collections.abc import Iterator
from typing import Any

import grpc

from . import protocol
from .errors import from_status
from .outbox import ThreadOutbox
from .types import LiveConfig, LiveError, LiveFrame, LiveResult


class LiveSession:
    """A live session (see the module docstring). `send` and `configure` return at once;
    `close` says no more frames, and iteration ends after the last result."""

    def __init__(self, stub: Any, metadata: tuple, config: LiveConfig) -> None:
        self._outbox = ThreadOutbox()
        self._outbox.put(protocol.live_config_request(config))
        # grpc's own thread takes messages from the outbox as the connection allows, until
        # the outbox ends the stream, which it does at the latest when the call ends.
        self._call = stub.Live(self._outbox.requests(), metadata=metadata)
        if not self._call.add_callback(self._outbox.cancel):
            self._outbox.cancel()  # it ended already

    def send(self, frame: LiveFrame) -> None:
        self._outbox.put(protocol.live_frame_request(frame))

    def configure(self, config: LiveConfig) -> None:
        """A new config, for the frames processed after it."""
        self._outbox.put(protocol.live_config_request(config))

    def close(self) -> None:
        self._outbox.close()

    def cancel(self) -> None:
        """End the session now, results in flight and a frame waiting to be sent included."""
        self._outbox.cancel()
        self._call.cancel()

    def __iter__(self) -> Iterator[LiveResult | LiveError]:
        try:
            for event in self._call:
                self._outbox.answered(event)
                yield protocol.live_event_from_proto(event, self._outbox.dropped)
        except grpc.RpcError as error:
            raise from_status(error.code(), error.details()) from None

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
