"""`tether bridge`: live sessions over WebSocket, for hosts that cannot speak gRPC.

Godot's `WebSocketPeer` first, and anything else with a WebSocket client. One local
process, built on `tether.aio`, forwards each host connection to its own `Live` session on
a Tether server, and serves a viewer page that shows the results as they arrive:

    tether bridge --server 127.0.0.1:50051 --port 8765
    python -m tether.bridge --server 127.0.0.1:50051 --port 8765     # the same

    ws://127.0.0.1:8765/live      a host: JSON control messages + binary frames
    ws://127.0.0.1:8765/viewer    a viewer: receives every host's results
    http://127.0.0.1:8765/        the viewer page (live frames, fps, lag)

The wire format is documented in protos/bridge.md. Modules: `wire` (the binary and JSON
messages), `config` (config messages -> `tether.LiveConfig`), `server` (the WebSocket
server), `cli` (the command). Needs the `websockets` package (`pip install
'tether[bridge]'`) to run; importing it does not.
"""

from .cli import add_arguments, check_arguments, main
from .config import config_from_json
from .server import serve
from .wire import (
    ProtocolError,
    ResultMessage,
    pack_frame,
    pack_result,
    unpack_frame,
    unpack_result,
)

__all__ = [
    "ProtocolError",
    "ResultMessage",
    "add_arguments",
    "check_arguments",
    "config_from_json",
    "main",
    "pack_frame",
    "pack_result",
    "serve",
    "unpack_frame",
    "unpack_result",
]
