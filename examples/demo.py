"""The main job on the embedded tiny model: start a server, generate with three control
units (depth and normals as float buffers from a numpy-rendered scene, plus an edge map)
while streaming previews, and write the frames and the final image.

    make demo            # or: .venv/bin/python examples/demo.py [--out out/demo]

The tiny model has random weights: it draws noise, not pictures. With a real model
(`tether serve --models sd15.toml`) the same request draws the scene.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import tether
from PIL import Image
from scene import render, silhouette_edges


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(address: str, server: subprocess.Popen) -> None:
    with tether.Client(address) as client:
        for _ in range(600):
            if server.poll() is not None:
                sys.exit("the server exited while starting")
            try:
                client.models(timeout=1)
                return
            except tether.Unavailable:
                time.sleep(0.2)
    sys.exit("the server did not start within two minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description="Tether demo on the embedded tiny model")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    frames = args.out / "frames"
    frames.mkdir(parents=True, exist_ok=True)

    # 1. A server on the embedded model, on a free local port.
    address = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--port", address.split(":")[1]]
    )
    try:
        wait_until_serving(address, server)

        # 2. What a host knows exactly, converted with the SDK's maps.
        depth, normals = render(256, 256)
        controls = [
            tether.Control("depth", tether.maps.depth_from_linear(depth), weight=1.0),
            tether.Control("normal", tether.maps.normals_from_view(normals), weight=0.7, end=0.8),
            tether.Control("canny", silhouette_edges(depth), weight=0.5, end=0.5),
        ]
        Image.fromarray(tether.maps.to_uint8(controls[0].image)).save(args.out / "depth.png")
        Image.fromarray(tether.maps.to_uint8(controls[1].image)).save(args.out / "normal.png")

        # 3. Generate, streaming a fast preview every step.
        with tether.Client(address) as client:
            for event in client.stream(
                "a glass sphere on a marble floor, studio light",
                controls=controls,
                steps=args.steps,
                seed=7,
                preview="fast",
            ):
                if isinstance(event, tether.Progress):
                    print(f"\rstep {event.step}/{event.total}", end="", flush=True)
                    Image.fromarray(event.preview).save(frames / f"step_{event.step:03d}.png")
                elif isinstance(event, tether.Result):
                    event.save(args.out / "result.png")
                    print(
                        f"\nresult: {args.out / 'result.png'} (seed {event.seed}, "
                        f"{event.timings.denoise_ms / 1000:.1f} s denoising)\n"
                        f"previews: {frames}/ ({len(list(frames.iterdir()))} frames)\n"
                        f"control maps: {args.out / 'depth.png'}, {args.out / 'normal.png'}"
                    )
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
