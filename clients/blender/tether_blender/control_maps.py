"""Blender's passes -> ControlNet units, through `tether.maps` and `tether.Control`. No bpy.

The conventions (see tether.maps and docs/conventions.md):

- Normal: Blender's Normal pass is in world space; the camera's world matrix rotates it
  into view space (+X right, +Y up, +Z toward the viewer, Blender's own view space), which
  `tether.maps.normals_from_world` encodes in the normalbae layout. No geometry = (0, 0, 0)
  in the pass, which the conversion treats as background.
- Depth: the Depth pass is linear depth along the view axis, so `depth_from_linear` applies
  directly, with ``far`` at Blender's no-hit value 1e10: left in, the background would
  count as the farthest surface and squash the real geometry into a sliver of grey.
- Canny: the colour picture as rendered (8-bit, display-referred) goes out as it is; the
  server finds its edges (`tether.Control.canny`, OpenCV) at the output's scale.

Depth and normal maps are converted here rather than on the server (`Control.depth`,
`Control.normal` would do the same with the same code) so that the add-on holds the exact
maps it sends; they stay float32 in [0, 1]: the SDK sends them as raw float buffers,
without 8-bit rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tether
import tether.maps

from .passes import BACKGROUND_DEPTH, Passes

__all__ = ["COLOUR_KINDS", "DATA_KINDS", "KINDS", "UnitOptions", "control", "control_map"]

# The control kinds this add-on makes from Blender's renders, in panel order: from the
# data passes (depth, normal) or from the colour picture (canny).
DATA_KINDS = ("depth", "normal")
COLOUR_KINDS = ("canny",)
KINDS = DATA_KINDS + COLOUR_KINDS


@dataclass(frozen=True)
class UnitOptions:
    """A unit's settings as plain values: weight in [0, 2], acting from ``start`` to
    ``end`` (fractions of the steps); ``low`` and ``high`` are canny's thresholds."""

    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    low: int = 100
    high: int = 200


def depth_map(passes: Passes) -> np.ndarray:
    """(H, W, 3) float32 disparity map: near = white, far = black, background = 0."""
    return tether.maps.depth_from_linear(passes.depth, far=BACKGROUND_DEPTH)


def normal_map(passes: Passes, camera_to_world: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 normalbae map; ``camera_to_world`` is the camera's 4x4 world
    matrix (``camera.matrix_world``) at the time of the render."""
    return tether.maps.normals_from_world(passes.normal, camera_to_world)


def control_map(kind: str, passes: Passes, camera_to_world: np.ndarray) -> np.ndarray:
    """The control map of one kind from ``DATA_KINDS``."""
    if kind == "depth":
        return depth_map(passes)
    if kind == "normal":
        return normal_map(passes, camera_to_world)
    raise ValueError(f"kind: must be one of {', '.join(DATA_KINDS)} (got {kind!r})")


def control(
    kind: str, model: str, passes: Passes, camera_to_world: np.ndarray, options: UnitOptions
) -> tether.Control:
    """The unit of one kind from ``KINDS``, for the control model ``model``."""
    unit = {"weight": options.weight, "start": options.start, "end": options.end}
    if kind == "canny":
        return tether.Control.canny(
            passes.colour, low=options.low, high=options.high, model=model, **unit
        )
    return tether.Control(model, control_map(kind, passes, camera_to_world), **unit)
