"""Tether: Stable Diffusion with ControlNet over gRPC, for game engines, 3D tools and
photo editors.

    import tether
    with tether.Client("127.0.0.1:50051") as client:
        result = client.generate("a stone castle", controls=[tether.Control("depth", depth)])
        result.save("castle.png")

`tether.aio.Client` is the asyncio twin; `tether.maps` converts renderer depth and normal
buffers into control maps. The SDK needs only grpcio, protobuf and numpy. The types below
are defined in `tether.types`; `tether.protocol` converts them to `tether.v1` messages.
"""

from . import aio, maps
from .client import Client, Stream
from .errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TetherError,
    Unauthenticated,
    Unavailable,
)
from .live import LiveSession
from .types import (
    BaseModel,
    Canny,
    Control,
    ControlModel,
    Depth,
    Embedding,
    Event,
    Invert,
    Limits,
    LiveConfig,
    LiveError,
    LiveEvent,
    LiveFrame,
    LiveResult,
    Lora,
    LoraModel,
    ModelList,
    Normal,
    Picture,
    Progress,
    Queued,
    Result,
    ServerInfo,
    Timings,
)

__version__ = "0.1.0"

__all__ = [
    "BaseModel",
    "Canny",
    "Cancelled",
    "Client",
    "Control",
    "ControlModel",
    "DeadlineExceeded",
    "Depth",
    "Embedding",
    "Event",
    "Internal",
    "InvalidArgument",
    "Invert",
    "Limits",
    "LiveConfig",
    "LiveError",
    "LiveEvent",
    "LiveFrame",
    "LiveResult",
    "LiveSession",
    "Lora",
    "LoraModel",
    "ModelList",
    "Picture",
    "Normal",
    "NotFound",
    "PermissionDenied",
    "Progress",
    "Queued",
    "ResourceExhausted",
    "Result",
    "ServerInfo",
    "Stream",
    "TetherError",
    "Timings",
    "Unauthenticated",
    "Unavailable",
    "aio",
    "maps",
]
