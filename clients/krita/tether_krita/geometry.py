"""Rectangles on the canvas and the size a region is generated at.

Pure Python: no Krita, no numpy. Coordinates are Krita's: pixels, origin at the top left
of the canvas, y growing downwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Stable Diffusion works on 8x8 latent cells: the server accepts multiples of 8 only.
SIZE_MULTIPLE = 8
# Below this the models produce mush; small regions are scaled up instead.
MIN_GENERATION_SIDE = 64


@dataclass(frozen=True)
class Rect:
    """An axis-aligned pixel rectangle; empty when width or height is 0."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def intersect(self, other: Rect) -> Rect:
        left, top = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return Rect(left, top, 0, 0)
        return Rect(left, top, right - left, bottom - top)

    def grow(self, margin: int) -> Rect:
        return Rect(
            self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin
        )


def context_region(selection: Rect, canvas: Rect, context_fraction: float) -> Rect:
    """The part of the canvas sent to the server for a selection: its bounding box grown
    by `context_fraction` of its longer side on every edge, so the model sees what
    surrounds the hole it fills, clipped to the canvas."""
    if context_fraction < 0:
        raise ValueError("context_fraction must not be negative")
    margin = math.ceil(context_fraction * max(selection.width, selection.height))
    return selection.grow(margin).intersect(canvas)


def generation_size(
    width: int, height: int, base_width: int, base_height: int, max_pixels: int = 0
) -> tuple[int, int]:
    """The (width, height) a `width` x `height` region is generated at.

    The region is scaled, keeping its aspect ratio, to the pixel count the model was
    trained at (`base_width` x `base_height`): models draw badly far from it, in both
    directions. Sides are multiples of 8 and at least 64; `max_pixels` (the server's
    limit, 0 = none) caps the area.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"empty region {width}x{height}")
    if base_width <= 0 or base_height <= 0:
        raise ValueError(f"model size {base_width}x{base_height} must be positive")
    target = base_width * base_height
    if max_pixels > 0:
        target = min(target, max_pixels)
    scale = math.sqrt(target / (width * height))
    scaled_w, scaled_h = width * scale, height * scale
    # A strip thinner than the minimum side gets the minimum, and its length shrinks to
    # keep the area: the strip is then squeezed, and stretched back when pasted.
    if scaled_h < MIN_GENERATION_SIDE:
        scaled_h, scaled_w = MIN_GENERATION_SIDE, target / MIN_GENERATION_SIDE
    elif scaled_w < MIN_GENERATION_SIDE:
        scaled_w, scaled_h = MIN_GENERATION_SIDE, target / MIN_GENERATION_SIDE
    out_w = _to_multiple(scaled_w)
    out_h = _to_multiple(scaled_h)
    # Rounding up and the minimum side can overshoot the server's limit: shrink the longer
    # side until it fits (the shorter one is already at its floor in the extreme cases).
    while max_pixels > 0 and out_w * out_h > max_pixels:
        if out_w >= out_h and out_w > MIN_GENERATION_SIDE:
            out_w -= SIZE_MULTIPLE
        elif out_h > MIN_GENERATION_SIDE:
            out_h -= SIZE_MULTIPLE
        else:
            raise ValueError(
                f"the server's limit of {max_pixels} pixels is below "
                f"{MIN_GENERATION_SIDE}x{MIN_GENERATION_SIDE}"
            )
    return out_w, out_h


def canvas_size(width: int, height: int, max_canvas_pixels: int) -> tuple[int, int]:
    """The (width, height) a region too large for one pass is sent at, to be refined in
    tiles at full resolution: its own size with sides rounded up to multiples of 8, or,
    over `max_canvas_pixels` (the server's limit for a canvas), scaled down to fit,
    keeping the aspect ratio."""
    if width <= 0 or height <= 0:
        raise ValueError(f"empty region {width}x{height}")
    out_w, out_h = _round_up(width), _round_up(height)
    if out_w * out_h <= max_canvas_pixels:
        return out_w, out_h
    scale = math.sqrt(max_canvas_pixels / (width * height))
    return _round_down(width * scale), _round_down(height * scale)


def _round_up(value: int) -> int:
    return -(-value // SIZE_MULTIPLE) * SIZE_MULTIPLE


def _round_down(value: float) -> int:
    return max(SIZE_MULTIPLE, int(value // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def _to_multiple(value: float) -> int:
    rounded = int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE
    return max(MIN_GENERATION_SIDE, rounded)
