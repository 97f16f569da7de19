"""Worker.run words an engine failure once, so Generate and Live report it alike.

An engine worker's host (`engine_process.EngineHost`) runs here on an engine made to fail
as a GPU would (out of memory) or as a bug would; the test plays the front over a real ZMQ
socket pair. A Generate call and a live frame get the same words, the call with the error
the front's one table turns into a status code.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tether
import torch
import zmq
import zmq.asyncio
from tether import protocol
from tether._proto.tether.v1 import tether_pb2
from tether_server import wire
from tether_server.engine import Engine
from tether_server.engine_process import EngineHost
from tether_server.service import STATUS_CODES
from tether_server.worker import Worker

FAILURES = [
    (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        "RESOURCE_EXHAUSTED",
        "out of GPU memory; try a smaller size",
    ),
    (
        RuntimeError("a kernel failed"),
        "INTERNAL",
        "the engine failed: RuntimeError: a kernel failed",
    ),
]


@pytest.mark.parametrize("failure, code, message", FAILURES)
def test_an_engine_failure_reads_the_same_in_generate_and_live(tiny_models, failure, code, message):
    def fail(jobs):
        raise failure

    engine = Engine(tiny_models)
    engine.run = fail

    async def main():
        context = zmq.asyncio.Context()
        front = context.socket(zmq.ROUTER)
        front.bind("inproc://engine")
        back = context.socket(zmq.DEALER)
        back.setsockopt(zmq.ROUTING_ID, b"w")
        back.connect("inproc://engine")
        worker = Worker(engine, max_queue=4, max_batch=1)
        worker.start()
        serving = asyncio.create_task(EngineHost(back, worker).serve())

        async def send(kind: str, header: dict, *payload: bytes) -> None:
            await front.send_multipart([b"w", *wire.pack(kind, header, *payload)])

        async def receive(wanted: str) -> tuple[dict, list]:
            while True:
                kind, header, payload = wire.unpack((await front.recv_multipart(copy=False))[1:])
                if kind == wanted:
                    return header, payload

        try:
            request = protocol.generate_request("x", steps=2, width=64, height=64)
            header = {"call": 1, "request_id": "r1", "admitted": True, "waited_ms": 0.0}
            await send(wire.GENERATE, header, request.SerializeToString())
            error = wire.error_from((await receive(wire.ERROR))[0])

            await send(wire.LIVE_OPEN, {"call": 2, "request_id": "r2"})
            config = protocol.live_config_request(tether.LiveConfig("x"))
            await send(wire.LIVE_CONFIG, {"call": 2, "seq": 1}, config.SerializeToString())
            assert (await receive(wire.CONFIG))[0]["ok"]
            colour = np.zeros((64, 64, 3), dtype=np.uint8)
            frame = protocol.live_frame_request(tether.LiveFrame(7, colour))
            header = {"call": 2, "dropped": 0, "waited_ms": 0.0}
            await send(wire.LIVE_FRAME, header, frame.SerializeToString())
            header, payload = await receive(wire.EVENT)
            assert header["outcome"] == "error"
            return error, tether_pb2.LiveEvent.FromString(payload[0].bytes).error
        finally:
            serving.cancel()
            await asyncio.to_thread(worker.stop)
            context.destroy()

    generate_error, live_error = asyncio.run(main())
    assert STATUS_CODES[type(generate_error)].name == code and str(generate_error) == message
    assert live_error.frame_id == 7 and live_error.message == message
