"""Render the depth and normal passes of the active camera, headless-safe.

How, and why this way:

- A temporary copy of the scene is rendered (``Scene.copy()`` links the same objects,
  camera and world, but has its own render settings and view layers), so the user's
  render settings and view layers are never touched, even if rendering fails.
- Cycles on the CPU: it runs everywhere, including Blender without a GPU or display
  (EEVEE needs an OpenGL context). Passes need one sample: with a 0.01-pixel box filter
  every pixel holds the surface at its centre instead of an average across silhouettes,
  which would blend real depth with the background's 1e10 and real normals with zero.
- The passes go to a multilayer EXR file that `exr` reads back: the "Render Result" image
  has no pixels in background mode, and EXR keeps the float data exactly (it is never
  colour-managed: data passes are written as they are).

Blender's conventions, which `tether.maps` is told about by the caller: the Normal pass is
in WORLD space, the Depth (Z) pass is the distance along the camera's view axis (planar
z-depth, not the distance to the eye) with 1e10 where no geometry was hit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from . import exr

__all__ = [
    "BACKGROUND_DEPTH",
    "Passes",
    "PassesError",
    "configure_for_passes",
    "render_passes",
    "render_size",
]

# What Cycles writes into the Depth pass where a ray hits nothing.
BACKGROUND_DEPTH = 1e10


class PassesError(RuntimeError):
    """Rendering the passes failed; the message is for the user."""


@dataclass(frozen=True)
class Passes:
    """Render passes of one frame, top row first."""

    depth: np.ndarray  # (H, W) float32: planar depth along the view axis; 1e10 = nothing
    normal: np.ndarray  # (H, W, 3) float32: world-space normals; (0, 0, 0) = nothing
    width: int
    height: int


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The size of a render of ``scene``: its resolution times its percentage."""
    render = scene.render
    scale = render.resolution_percentage / 100
    return int(render.resolution_x * scale), int(render.resolution_y * scale)


def render_passes(scene: bpy.types.Scene, view_layer_name: str) -> Passes:
    """Render ``scene`` from its camera at its render size with the Depth and Normal passes
    of the view layer ``view_layer_name``. The scene itself is left as it was."""
    with tempfile.TemporaryDirectory(prefix="tether-passes-") as directory:
        path = Path(directory) / "passes.exr"
        copy = scene.copy()
        try:
            copy.name = "Tether Passes"
            configure_for_passes(copy, view_layer_name, path)
            try:
                result = bpy.ops.render.render(write_still=True, scene=copy.name)
            except RuntimeError as error:  # Blender's own reason, e.g. a missing camera
                raise PassesError(f"Rendering the passes failed: {error}") from None
            if result != {"FINISHED"} or not path.is_file():
                raise PassesError(f"Rendering the passes failed ({', '.join(result)})")
        finally:
            bpy.data.scenes.remove(copy)
        try:
            channels = exr.read_channels(path)
        except exr.ExrError as error:
            raise PassesError(f"Reading the rendered passes failed: {error}") from None

    prefix = f"{view_layer_name}."
    try:
        depth = channels[prefix + "Depth.Z"]
        normal = np.stack([channels[prefix + f"Normal.{axis}"] for axis in "XYZ"], axis=-1)
    except KeyError as missing:
        raise PassesError(f"The rendered file lacks the pass {missing}") from None
    height, width = depth.shape
    return Passes(depth=depth, normal=normal, width=width, height=height)


def configure_for_passes(copy: bpy.types.Scene, view_layer_name: str, path: Path) -> None:
    """Set up ``copy`` (a throwaway copy of the user's scene) to render the data passes of
    one view layer into a multilayer EXR at ``path``."""
    render = copy.render
    try:
        render.engine = "CYCLES"
        cycles = copy.cycles
    except (TypeError, AttributeError):  # not an engine, or its settings not registered
        raise PassesError(
            "Rendering the passes needs Cycles: enable the Cycles add-on in Preferences"
        ) from None
    cycles.device = "CPU"
    cycles.samples = 1
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.pixel_filter_type = "BOX"
    cycles.filter_width = 0.01  # the minimum: one surface per pixel, see the module doc
    cycles.max_bounces = 0  # only the first hit matters for data passes
    cycles.time_limit = 0.0
    render.film_transparent = True
    render.use_motion_blur = False
    render.use_border = False  # the whole frame, whatever region the user renders
    render.use_multiview = False
    render.use_compositing = False  # the passes as rendered, not as composited
    render.use_sequencer = False
    render.use_persistent_data = False

    for layer in copy.view_layers:
        layer.use = layer.name == view_layer_name
    layer = copy.view_layers.get(view_layer_name)
    if layer is None:
        raise PassesError(f"View layer {view_layer_name!r} not found")
    layer.use_pass_z = True
    layer.use_pass_normal = True

    settings = render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5.0 groups formats by media type
        settings.media_type = "MULTI_LAYER_IMAGE"
    settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.color_depth = "32"
    settings.exr_codec = "NONE"  # what `exr` reads
    render.use_file_extension = False
    render.filepath = str(path)
