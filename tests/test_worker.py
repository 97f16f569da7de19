"""Worker.run words an engine failure once, so Generate and Live report it alike.

The engine of an in-process server on a real port is made to fail as a GPU would (out of
memory) or as a bug would; a Generate call and a live frame then get the same words, the
call with the status code from the service's one table.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import tether
import torch
from tether._proto.tether.v1 import tether_pb2, tether_pb2_grpc
from tether_server.engine import Engine
from tether_server.service import TetherService
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
        worker = Worker(engine, max_queue=4, max_batch=1)
        worker.start()
        service = TetherService(tether_pb2.Limits())
        service.ready(worker)
        server = grpc.aio.server()
        tether_pb2_grpc.add_TetherServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with tether.aio.Client(f"127.0.0.1:{port}") as client:
                with pytest.raises(tether.TetherError) as caught:
                    await client.generate("x", steps=2, width=64, height=64)
                async with client.live(tether.LiveConfig("x")) as session:
                    colour = np.zeros((64, 64, 3), dtype=np.uint8)
                    await session.send(tether.LiveFrame(1, colour))
                    async for event in session:
                        return caught.value, event
        finally:
            await server.stop(None)
            await asyncio.to_thread(worker.stop)

    generate_error, live_event = asyncio.run(main())
    assert generate_error.code == code and str(generate_error) == message
    assert isinstance(live_event, tether.LiveError) and live_event.frame_id == 1
    assert live_event.message == message
