"""Messages between the gRPC front and its engine worker processes, over ZMQ.

Every message is multipart: [kind, header, *payload]. `kind` is one ASCII word, `header` a
small JSON object, and the payload zero or more frames of serialized tether.v1 messages,
sent as the bytes they already are (no copy on send: ZMQ keeps a reference to the buffer)
and parsed by the receiver straight from ZMQ's buffer. The front forwards a client's
request bytes without parsing them, and a worker's event bytes to the client as they come.

The front binds one ROUTER socket (`ipc://` in a private folder); each worker connects a
DEALER whose routing id names it. `call` in a header is the front's id for one Generate,
Preprocess or live session.

Front -> worker:
  generate     {call, request_id, admitted, waited_ms}   GenerateRequest
               admitted false: the queue is full; check the request (every check before
               decoding) and answer `valid` instead of running it
  preprocess   {call, request_id}                        PreprocessRequest
  live_open    {call, request_id}
  live_config  {call, seq}                               LiveRequest holding a config
  live_frame   {call, dropped, waited_ms}                LiveRequest holding a frame
  cancel       {call}                                    end the call, whatever its kind

Worker -> front:
  hello    {pid, device, devices}     torch imported, the models not loaded yet; `devices`
                                      are the ones torch sees, for the front's defaults
  ready    {device, dtype}            ListModelsResponse
  failed   {error}                    the models cannot be loaded (the worker exits)
  started  {call}                     a batch took the job: it left the queue
  event    {call, outcome}            GenerateEvent or LiveEvent, for the client as it is;
                                      a live event's outcome: result, reused, error (each
                                      answers the frame sent) or config_error
  done     {call}                     the call's last message and its answer: the
                                      GenerateEvent holding the result, or the
                                      PreprocessResponse
  valid    {call}                     the request passed the checks (admitted false)
  error    {call, error, message, retry_after_ms}
  config   {call, seq, ok}            a live config was taken (ok) or refused
  batch    {queued_ms, batch_ms, step_ms}   a batch ran (`worker.BatchReport`)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import zmq

from .errors import ResourceExhausted, TetherError

# Front -> worker.
GENERATE = "generate"
PREPROCESS = "preprocess"
LIVE_OPEN = "live_open"
LIVE_CONFIG = "live_config"
LIVE_FRAME = "live_frame"
CANCEL = "cancel"
# Worker -> front.
HELLO = "hello"
READY = "ready"
FAILED = "failed"
STARTED = "started"
EVENT = "event"
DONE = "done"
VALID = "valid"
ERROR = "error"
CONFIG = "config"
BATCH = "batch"

# An error crosses by its class name: every error a client is told about.
ERRORS: dict[str, type[TetherError]] = {cls.__name__: cls for cls in TetherError.__subclasses__()}


def pack(kind: str, header: dict[str, Any], *payload: bytes) -> list[bytes]:
    return [kind.encode(), json.dumps(header).encode(), *payload]


def unpack(frames: Sequence[zmq.Frame]) -> tuple[str, dict[str, Any], list[zmq.Frame]]:
    """(kind, header, payload frames) of a message received with copy=False."""
    return frames[0].bytes.decode(), json.loads(frames[1].bytes), list(frames[2:])


def error_header(call: int, error: TetherError) -> dict[str, Any]:
    retry = error.retry_after_ms if isinstance(error, ResourceExhausted) else None
    return {
        "call": call,
        "error": type(error).__name__,
        "message": str(error),
        "retry_after_ms": retry,
    }


def error_from(header: dict[str, Any]) -> TetherError:
    cls = ERRORS[header["error"]]
    if cls is ResourceExhausted:
        return ResourceExhausted(header["message"], retry_after_ms=header["retry_after_ms"])
    return cls(header["message"])


def unlimited(socket: zmq.Socket) -> None:
    """No high-water marks: a ROUTER drops messages past one, silently. What is in flight
    is bounded by the front instead (the queue limit, one frame per live session)."""
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.setsockopt(zmq.LINGER, 0)
