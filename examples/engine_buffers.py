"""Send a renderer's own buffers: float linear depth and view-space normals of a scene
rendered in numpy, as two control units with different weights. The server converts them
with the exact conventions (tether.maps); `preprocess` shows the maps it will use.

    tether serve &                       # embedded tiny model
    .venv/bin/python examples/engine_buffers.py [--server 127.0.0.1:50051] [--out out/buffers]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tether
from PIL import Image
from scene import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--out", type=Path, default=Path("out/buffers"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # A 320x240 render: the server fits it to the 256x256 output (crop and resize).
    depth, normals = render(320, 240)  # float32: inf where nothing was hit
    controls = [
        tether.Control.depth(depth, weight=1.0),
        tether.Control.normal(normals, weight=0.6, end=0.7),
    ]
    with tether.Client(args.server) as client:
        for control in controls:
            shown = client.preprocess(control, width=256, height=256)
            Image.fromarray(shown).save(args.out / f"{control.model}_map.png")
        result = client.generate("a marble sphere on a floor", controls=controls, seed=3)
    result.save(args.out / "result.png")
    print(f"maps and result in {args.out}/ (seed {result.seed})")


if __name__ == "__main__":
    main()
