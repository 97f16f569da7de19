"""A seamless texture from a tileable normal map: the same request with and without
`tiling="xy"`, each repeated 2 x 2 side by side (the README's picture), and a texture twice
the size made in tiles (`upscale=2`), seamless too.

    tether serve &                       # embedded tiny model
    .venv/bin/python examples/seamless_texture.py [--server 127.0.0.1:50051] [--out out/seamless]

The tiny model draws noise-like detail, not stone; look at the edges where the copies meet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tether
from PIL import Image

SIZE = 96


def tileable_bumps(size: int) -> tuple[np.ndarray, np.ndarray]:
    """View-space normals of a periodic height field, and a periodic colour image."""
    y, x = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    # h = 0.15 sin(2x) cos(3y): its slopes give the normal (-dh/dx, -dh/dy, 1), normalised.
    dx, dy = 0.3 * np.cos(2 * x) * np.cos(3 * y), -0.45 * np.sin(2 * x) * np.sin(3 * y)
    normals = np.stack([-dx, -dy, np.ones_like(dx)], axis=2)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    colour = np.stack(
        [0.55 + 0.2 * np.sin(x + y), 0.45 + 0.2 * np.cos(2 * x), 0.4 + 0.2 * np.sin(y)]
    )
    return normals.astype(np.float32), np.moveaxis(colour, 0, 2).astype(np.float32)


def repeat(image: np.ndarray) -> np.ndarray:
    return np.tile(image, (2, 2, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--out", type=Path, default=Path("out/seamless"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    normals, colour = tileable_bumps(SIZE)
    request = dict(
        controls=[tether.Control("normal", tether.maps.normals_from_view(normals))],
        init_image=colour,
        strength=0.6,
        steps=10,
        seed=4,
        width=SIZE,
        height=SIZE,
    )
    with tether.Client(args.server) as client:
        plain = client.generate("weathered stone tiles", **request).image
        tiled = client.generate("weathered stone tiles", tiling="xy", **request).image
        # Twice the size: a tiled first pass at SIZE, upscaled and refined in 64-pixel
        # tiles whose grid wraps around the edges too, so the larger texture tiles as well.
        larger = client.generate(
            "weathered stone tiles",
            controls=request["controls"],
            steps=10,
            seed=4,
            width=SIZE,
            height=SIZE,
            tiling="xy",
            upscale=2,
            strength=0.5,
            tile_size=64,
        ).image
    gap = np.full((2 * SIZE, 8, 3), 255, dtype=np.uint8)
    picture = np.concatenate([repeat(plain), gap, repeat(tiled)], axis=1)
    Image.fromarray(picture).save(args.out / "repeat_2x2.png", optimize=True)
    Image.fromarray(tiled).save(args.out / "texture.png")
    Image.fromarray(larger).save(args.out / "texture_2x.png")
    print(f"left: without tiling, right: tiling='xy', each 2 x 2: {args.out / 'repeat_2x2.png'}")


if __name__ == "__main__":
    main()
