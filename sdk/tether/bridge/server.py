"""The bridge's server: each host connection gets its own `Live` session on a Tether
server (through `tether.aio`); viewers get every host's results; plain HTTP gets the viewer
page. The wire format is in protos/bridge.md. `websockets` is imported when a bridge
starts, not with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import LiveConfig, LiveFrame, LiveResult, TetherError, aio, connection
from .config import config_from_json
from .wire import ProtocolError, error_message, pack_result, status_message, unpack_frame

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
HOST_PATH = "/live"
VIEWER_PATH = "/viewer"
# A 1024x1024 frame with RGB8 colour, F32 depth and F32 normals is 20 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Frame arrival times kept for the lag of their results; older ones are forgotten.
MAX_PENDING_FRAMES = 256


class _Viewer:
    """One viewer connection: status notes in order, results newest-only, so that a slow
    browser tab never holds up a host."""

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.notes: deque[str] = deque(maxlen=32)
        self.result: bytes | None = None
        self.wake = asyncio.Event()

    def offer(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.result = message
        else:
            self.notes.append(message)
        self.wake.set()

    async def pump(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.notes:
                await self.websocket.send(self.notes.popleft())
            if self.result is not None:
                message, self.result = self.result, None
                await self.websocket.send(message)


class Bridge:
    """Accepts hosts and viewers; one `tether.aio.Client` shared by every host session."""

    def __init__(
        self, client: aio.Client, token: str | None = None, allowed_origins: Sequence[str] = ()
    ) -> None:
        self.client = client
        self.token = token
        self.allowed_origins = {origin.rstrip("/") for origin in allowed_origins}
        self.page = resources.files(__package__).joinpath("viewer.html").read_text("utf-8")
        self.hosts = 0
        self.viewers: set[_Viewer] = set()
        self.last_result: bytes | None = None

    def process_request(self, ws: Any, request: Any) -> Any:
        """Plain HTTP before any WebSocket: the viewer page, 404s, the origin and token
        checks. None lets the handshake go on."""
        path = urlsplit(request.path).path
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            return ws.respond(403, f"origin {origin} may not use this bridge\n")
        if path in ("/", "/index.html"):
            # The page holds no data: it asks for the token when it opens its WebSocket.
            response = ws.respond(200, self.page)
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            response.headers["Cache-Control"] = "no-store"
            return response
        if path not in (HOST_PATH, VIEWER_PATH):
            return ws.respond(
                404, f"nothing at {path}: hosts use {HOST_PATH}, viewers {VIEWER_PATH}\n"
            )
        if self.token is None:
            return None
        presented = _presented_token(request)
        if presented is None:
            problem = (
                "this bridge needs its token: send 'Authorization: Bearer TOKEN' or add "
                "?token=TOKEN to the address"
            )
        elif not hmac.compare_digest(presented.encode(), self.token.encode()):
            problem = "wrong bridge token"
        else:
            return None
        response = ws.respond(401, problem + "\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tether bridge"'
        return response

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        return (
            "*" in self.allowed_origins
            or origin.rstrip("/") in self.allowed_origins
            or urlsplit(origin).netloc == host
        )

    async def handle(self, websocket: Any) -> None:
        path = urlsplit(websocket.request.path).path
        if path == VIEWER_PATH:
            await self._viewer(websocket)
        else:
            self.hosts += 1
            self._status()
            try:
                await _HostSession(self, websocket).run()
            finally:
                self.hosts -= 1
                self._status()

    def broadcast(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.last_result = message
        for viewer in self.viewers:
            viewer.offer(message)

    def _status(self) -> None:
        self.broadcast(status_message(self.hosts, len(self.viewers)))

    async def _viewer(self, websocket: Any) -> None:
        viewer = _Viewer(websocket)
        self.viewers.add(viewer)
        self._status()
        if self.last_result is not None:
            viewer.offer(self.last_result)  # something to show at once
        pump = asyncio.create_task(viewer.pump())
        try:
            # What a viewer sends is ignored; this waits for it to go.
            async for _ in websocket:
                pass
        finally:
            self.viewers.discard(viewer)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            self._status()


class _HostSession:
    """One host connection = one Live session, opened by its first config."""

    def __init__(self, bridge: Bridge, websocket: Any) -> None:
        self.bridge = bridge
        self.websocket = websocket
        self.live: aio.LiveSession | None = None  # while a session is open
        self.sessions = contextlib.AsyncExitStack()  # every session opened, to end them all
        self.reader: asyncio.Task | None = None
        self.arrived: OrderedDict[int, float] = OrderedDict()  # frame id -> arrival time

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.websocket:
                if isinstance(message, str):
                    await self._on_text(message)
                else:
                    await self._on_frame(message)
        except ConnectionClosed:
            pass
        finally:
            await self._end()

    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as error:
            await self._error(f"message: not JSON ({error})")
            return
        if not isinstance(message, dict) or "type" not in message:
            await self._error('message: expected a JSON object with a "type"')
            return
        kind = message["type"]
        if kind != "config":
            await self._error(f'type: unknown message type {kind!r}; hosts send "config"')
            return
        try:
            config = config_from_json({k: v for k, v in message.items() if k != "type"})
        except ProtocolError as error:
            await self._error(str(error))
            return
        try:
            if self.live is None:
                await self._open(config)
            else:
                await self.live.configure(config)
        except TetherError as error:
            await self._session_ended(error)

    async def _open(self, config: LiveConfig) -> None:
        live = await self.sessions.enter_async_context(self.bridge.client.live(config))
        self.live = live
        self.arrived.clear()
        self.reader = asyncio.create_task(self._read(live))

    async def _on_frame(self, message: bytes) -> None:
        try:
            frame_id, buffers = unpack_frame(message)
        except ProtocolError as error:
            await self._error(str(error), frame_id=error.frame_id)
            return
        if self.live is None:
            await self._error(
                "no session: send a config message before frames",
                frame_id=frame_id,
                code="FAILED_PRECONDITION",
            )
            return
        try:
            frame = LiveFrame(frame_id, buffers[0], controls=buffers[1:])
            self.arrived[frame_id] = time.perf_counter()
            while len(self.arrived) > MAX_PENDING_FRAMES:
                self.arrived.popitem(last=False)
            await self.live.send(frame)
        except ValueError as error:
            await self._error(str(error), frame_id=frame_id)
        except TetherError as error:
            await self._session_ended(error)

    async def _read(self, live: aio.LiveSession) -> None:
        """Results and per-frame errors of one session, to the host and the viewers."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for event in live:
                if isinstance(event, LiveResult):
                    arrived = self._forget_up_to(event.frame_id)
                    lag_ms = (time.perf_counter() - arrived) * 1000 if arrived else 0.0
                    message = pack_result(event, lag_ms)
                    self.bridge.broadcast(message)
                    await self.websocket.send(message)
                else:
                    self.arrived.pop(event.frame_id, None)
                    await self._error(event.message, frame_id=event.frame_id)
        except TetherError as error:
            if self.live is live:
                await self._session_ended(error)
        except ConnectionClosed:
            pass  # the host went; run() ends the session

    def _forget_up_to(self, frame_id: int) -> float | None:
        """The arrival time of `frame_id`; frames before it were dropped or answered."""
        arrived = self.arrived.pop(frame_id, None)
        for older in [key for key in self.arrived if key < frame_id]:
            del self.arrived[older]
        return arrived

    async def _session_ended(self, error: TetherError) -> None:
        if self.live is not None:
            self.live.cancel()
            self.live = None
        await self._error(f"session ended: {error}", code=error.code, ended=True)

    async def _end(self) -> None:
        """The host went: cancel the calls, so that the server ends the sessions now."""
        self.live = None
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        await self.sessions.aclose()

    async def _error(self, message: str, **fields: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        text = error_message(message, **fields)
        self.bridge.broadcast(text)
        with contextlib.suppress(ConnectionClosed):
            await self.websocket.send(text)


def websockets_server() -> Any:
    try:
        import websockets.asyncio.server
    except ImportError as error:
        raise ImportError(
            "tether bridge needs the websockets package: pip install 'tether[bridge]'"
        ) from error
    return websockets.asyncio.server


async def serve(
    server: str = connection.DEFAULT_TARGET,
    *,
    token: str | None = None,
    tls: connection.TLS = False,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    bridge_token: str | None = None,
    allowed_origins: Sequence[str] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Future | None = None,
) -> None:
    """Run a bridge until `stop` is done (forever without one). `token` and `tls` are for
    the Tether server; hosts must present `bridge_token` when it is set. `ready(port)` is
    called once it listens (port 0 picks a free one)."""
    ws_server = websockets_server()
    async with aio.Client(server, token=token, tls=tls) as client:
        bridge = Bridge(client, bridge_token, allowed_origins)
        async with ws_server.serve(
            bridge.handle,
            host,
            port,
            process_request=bridge.process_request,
            max_size=max_message_bytes,
            # Frames and images are incompressible or already compressed; Godot does not
            # negotiate compression anyway.
            compression=None,
        ) as listening:
            if ready is not None:
                ready(listening.sockets[0].getsockname()[1])
            await (stop if stop is not None else asyncio.get_running_loop().create_future())


def _presented_token(request: Any) -> str | None:
    """The token of a handshake: `Authorization: Bearer TOKEN`, else `?token=TOKEN`
    (browsers cannot set headers on a WebSocket)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    tokens = parse_qs(urlsplit(request.path).query).get("token")
    return tokens[0] if tokens else None
