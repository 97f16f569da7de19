"""The texture of one target while views paint it, and what a later view is conditioned on.

Blending: each view adds, for every texel it sees, its colour times its blend weight
(`visibility`: the texel's area in the picture, in pixels); a texel's colour is the
weighted mean over the views that saw it. Texels of the UV map that no view saw are
missing: `MISSING_COLOUR` with alpha 0 in the texture, white in the missing mask.

Conditioning a later view: a pixel that shows a painted texel gets its colour (bilinear
from the texture) in the init image and black (keep) in the mask. Every other pixel is
white (repaint): target surface that no view has painted yet, and whatever is not a
target (background, other objects), which each view paints freely, as the first one did.
The repaint region of the init image continues the kept colours outward for a few pixels,
so that the server's soft mask edge blends toward them rather than toward grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bleed import dilate
from .screen import PixelSurfaces
from .texels import Texels
from .visibility import Observation

__all__ = ["MISSING_COLOUR", "Canvas", "Conditioning", "conditioning"]

# Magenta, Blender's own colour for a missing texture.
MISSING_COLOUR = (255, 0, 255)
# Texels by which painted colours grow into the texels off the UV map before lookups, so
# that bilinear reads at island borders stay within painted colours.
_LOOKUP_MARGIN = 2
# Pixels by which the init image continues kept colours into the repaint region (more
# than the blur of the server's mask edge, 4 pixels by default); grey beyond.
_INIT_FILL = 16
_INIT_GREY = 128


class Canvas:
    """The texture of one target: views add to it, it gives the texture and its mask."""

    def __init__(self, texels: Texels) -> None:
        self.texels = texels
        self._total = np.zeros((len(texels.index), 3), dtype=np.float64)
        self._weight = np.zeros(len(texels.index), dtype=np.float64)

    @property
    def painted(self) -> np.ndarray:
        """(N,) bool: the texels some view has seen."""
        return self._weight > 0

    def painted_share(self) -> float:
        """The share of the UV map's texels that views have painted, 0..1."""
        return float(self.painted.mean()) if len(self._weight) else 0.0

    def add(self, observation: Observation, picture: np.ndarray) -> None:
        """Blend in a view's ``picture`` ((H, W, 3) uint8, top row first) as it sees the
        texels."""
        weight = observation.weight
        self._total += weight[:, None] * observation.colours(picture)
        self._weight += weight

    def colours(self) -> np.ndarray:
        """(N, 3) float64 colours 0..255 of the texels; `MISSING_COLOUR` where unpainted."""
        colours = np.empty_like(self._total)
        colours[:] = MISSING_COLOUR
        painted = self.painted
        colours[painted] = self._total[painted] / self._weight[painted][:, None]
        return colours

    def finished(self, margin: int) -> tuple[np.ndarray, np.ndarray]:
        """The texture and its missing mask, top row first, with ``margin`` texels of
        bleed around the UV islands:

        - (size, size, 4) uint8 RGBA: painted texels opaque, missing ones
          `MISSING_COLOUR` with alpha 0, transparent black beyond the margin;
        - (size, size) uint8: 255 on missing texels, 0 elsewhere.
        """
        painted = self.painted
        alpha = np.where(painted, 255.0, 0.0)[:, None]
        missing = np.where(painted, 0.0, 255.0)[:, None]
        layers = self.texels.grid(np.concatenate([self.colours(), alpha, missing], axis=1))
        on_map = self.texels.grid(np.ones(len(painted), dtype=bool), fill=False)
        layers, _ = dilate(layers, on_map, margin)
        texture = np.round(layers[..., :4]).astype(np.uint8)
        mask = np.where(layers[..., 4] >= 127.5, 255, 0).astype(np.uint8)
        return texture, mask

    def sample(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colours (M, 3) float64 and painted share (M,) 0..1 at ``uv`` (M, 2), bilinear
        over the painted texels (UVs repeat outside 0..1, as the material's texture)."""
        size = self.texels.size
        painted = self.texels.grid(self.painted, fill=False)
        colours, reached = dilate(self.texels.grid(self.colours()), painted, _LOOKUP_MARGIN)
        # Grown into the texels off the UV map only: unpainted ones on it stay unpainted.
        unpainted = self.texels.grid(~self.painted, fill=False)
        painted = reached & ~unpainted
        x = np.mod(uv[:, 0], 1.0) * size - 0.5
        y = (1.0 - np.mod(uv[:, 1], 1.0)) * size - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        total = np.zeros((len(uv), 3))
        share = np.zeros(len(uv))
        for dx, dy, weight in (
            (0, 0, (1 - fx) * (1 - fy)),
            (1, 0, fx * (1 - fy)),
            (0, 1, (1 - fx) * fy),
            (1, 1, fx * fy),
        ):
            columns = (x0.astype(np.int64) + dx) % size
            rows = (y0.astype(np.int64) + dy) % size
            weight = weight * painted[rows, columns]
            total += weight[:, None] * colours[rows, columns]
            share += weight
        return total / np.maximum(share, 1e-12)[:, None], share


@dataclass(frozen=True)
class Conditioning:
    """An inpainting request's picture and mask for a later view."""

    init_image: np.ndarray  # (H, W, 3) uint8, top row first
    mask: np.ndarray  # (H, W) uint8: 255 = repaint, 0 = keep
    kept: int  # pixels showing texels earlier views painted
    new: int  # pixels showing target surface no view has painted yet


def conditioning(
    canvases: Sequence[Canvas], surfaces: PixelSurfaces, width: int, height: int
) -> Conditioning:
    """The init image and mask of a view whose pixels show ``surfaces`` of the targets
    painted on ``canvases`` (same order)."""
    colours = np.zeros((width * height, 3), dtype=np.float64)
    kept = np.zeros(width * height, dtype=bool)
    for index, canvas in enumerate(canvases):
        pixels = np.nonzero(surfaces.target == index)[0]
        colour, share = canvas.sample(surfaces.uv[pixels])
        colours[pixels] = colour
        kept[pixels] = share >= 0.5
    filled, reached = dilate(
        colours.reshape(height, width, 3), kept.reshape(height, width), _INIT_FILL
    )
    init = np.where(reached[..., None], filled, _INIT_GREY)
    new = int(((surfaces.target >= 0) & ~kept).sum())
    return Conditioning(
        init_image=np.round(init).astype(np.uint8),
        mask=np.where(kept, 0, 255).astype(np.uint8).reshape(height, width),
        kept=int(kept.sum()),
        new=new,
    )
