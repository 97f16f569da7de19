"""Blender's passes -> ControlNet control maps, through `tether.maps`. No bpy here.

The conventions (see tether.maps and DESIGN.md, "Conventions hosts must meet"):

- Normal: Blender's Normal pass is in world space; the camera's world matrix rotates it
  into view space (+X right, +Y up, +Z toward the viewer, Blender's own view space), which
  `tether.maps.normals_from_world` encodes in the normalbae layout. No geometry = (0, 0, 0)
  in the pass, which the conversion treats as background.
- Depth: the Depth pass is linear depth along the view axis, so `depth_from_linear` applies
  directly, with ``far`` at Blender's no-hit value 1e10: left in, the background would
  count as the farthest surface and squash the real geometry into a sliver of grey.

Both maps stay float32 in [0, 1]: the SDK sends them as raw float buffers, without 8-bit
rounding.
"""

from __future__ import annotations

import numpy as np
import tether.maps

from .passes import BACKGROUND_DEPTH, Passes

__all__ = ["KINDS", "control_map"]

# The control kinds this add-on makes from Blender's passes, in panel order. A "canny"
# unit waits for the SDK's server-side canny preprocessor (tether.Control.canny).
KINDS = ("depth", "normal")


def depth_map(passes: Passes) -> np.ndarray:
    """(H, W, 3) float32 disparity map: near = white, far = black, background = 0."""
    return tether.maps.depth_from_linear(passes.depth, far=BACKGROUND_DEPTH)


def normal_map(passes: Passes, camera_to_world: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 normalbae map; ``camera_to_world`` is the camera's 4x4 world
    matrix (``camera.matrix_world``) at the time of the render."""
    return tether.maps.normals_from_world(passes.normal, camera_to_world)


def control_map(kind: str, passes: Passes, camera_to_world: np.ndarray) -> np.ndarray:
    """The control map of one kind from ``KINDS``."""
    if kind == "depth":
        return depth_map(passes)
    if kind == "normal":
        return normal_map(passes, camera_to_world)
    raise ValueError(f"kind: must be one of {', '.join(KINDS)} (got {kind!r})")
