"""Render the depth and normal passes, and the colour picture, of a camera (the active one
unless told otherwise), headless-safe.

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
- The colour picture (for the canny unit) is a render of its own, since the data passes'
  single unfiltered sample would be noise in colour: Cycles on the CPU again, a few
  samples, denoised where Blender has OpenImageDenoise, the scene's own lights,
  materials, world, film and colour management (view transform, look, exposure), written
  as an 8-bit PNG (so Blender itself applies the view transform) and read back with
  ``bpy.data.images.load``. Workbench and EEVEE would need an OpenGL context, which a
  headless Blender may lack (and EEVEE compiles shaders for many seconds first).

Blender's conventions, which `tether.maps` is told about by the caller: the Normal pass is
in WORLD space, the Depth (Z) pass is the distance along the camera's view axis (planar
z-depth, not the distance to the eye) with 1e10 where no geometry was hit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from . import exr

__all__ = [
    "BACKGROUND_DEPTH",
    "COLOUR_SAMPLES",
    "Passes",
    "PassesError",
    "configure_for_colour",
    "configure_for_passes",
    "render_passes",
    "render_size",
]

# What Cycles writes into the Depth pass where a ray hits nothing.
BACKGROUND_DEPTH = 1e10
# Samples per pixel of the colour picture: with the denoiser, flat areas come out flat
# enough for edge detection (canny takes leftover noise for edges). Without it (Blender
# built without OpenImageDenoise) more, though even 128 leave noise that canny finds at
# its default thresholds in soft shadows.
COLOUR_SAMPLES = 16
COLOUR_SAMPLES_UNDENOISED = 64
# Light bounces of the colour picture, at most: edges need the shapes and the direct
# light, not every interreflection.
COLOUR_MAX_BOUNCES = 4


class PassesError(RuntimeError):
    """Rendering the passes failed; the message is for the user."""


@dataclass(frozen=True)
class Passes:
    """Render passes of one frame, top row first; None = not rendered (not asked for)."""

    width: int
    height: int
    depth: np.ndarray | None = None  # (H, W) float32: planar view depth; 1e10 = nothing
    normal: np.ndarray | None = None  # (H, W, 3) float32: world-space normals; 0 = nothing
    colour: np.ndarray | None = None  # (H, W, 3) uint8: the picture, display-referred


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The size of a render of ``scene``: its resolution times its percentage."""
    render = scene.render
    scale = render.resolution_percentage / 100
    return int(render.resolution_x * scale), int(render.resolution_y * scale)


def render_passes(
    scene: bpy.types.Scene,
    view_layer_name: str,
    *,
    data: bool = True,
    colour: bool = False,
    camera: bpy.types.Object | None = None,
) -> Passes:
    """Render ``scene`` from ``camera`` (default: its own) at its render size: with ``data``
    the Depth and Normal passes of the view layer ``view_layer_name``, with ``colour`` its
    picture. The scene itself is left as it was."""
    width, height = render_size(scene)
    depth = normal = picture = None
    camera = camera or scene.camera
    with tempfile.TemporaryDirectory(prefix="tether-passes-") as directory:
        if data:
            path = Path(directory) / "passes.exr"
            _render_copy(scene, camera, view_layer_name, path, configure_for_passes, "the passes")
            depth, normal = _read_data_passes(path, view_layer_name)
            height, width = depth.shape
        if colour:
            path = Path(directory) / "colour.png"
            what = "the colour picture"
            _render_copy(scene, camera, view_layer_name, path, configure_for_colour, what)
            picture = _read_png(path)
            height, width = picture.shape[:2]
    return Passes(width=width, height=height, depth=depth, normal=normal, colour=picture)


def _render_copy(
    scene: bpy.types.Scene,
    camera: bpy.types.Object | None,
    view_layer_name: str,
    path: Path,
    configure: Callable[[bpy.types.Scene, str, Path], None],
    what: str,
) -> None:
    """Render a temporary copy of ``scene`` from ``camera``, set up by ``configure``, into
    ``path``."""
    copy = scene.copy()
    try:
        copy.name = "Tether Passes"
        copy.camera = camera
        configure(copy, view_layer_name, path)
        try:
            result = bpy.ops.render.render(write_still=True, scene=copy.name)
        except RuntimeError as error:  # Blender's own reason, e.g. a missing camera
            raise PassesError(f"Rendering {what} failed: {error}") from None
        if result != {"FINISHED"} or not path.is_file():
            raise PassesError(f"Rendering {what} failed ({', '.join(result)})")
    finally:
        bpy.data.scenes.remove(copy)


def _read_data_passes(path: Path, view_layer_name: str) -> tuple[np.ndarray, np.ndarray]:
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
    return depth, normal


def _read_png(path: Path) -> np.ndarray:
    """(H, W, 3) uint8, top row first, exactly the file's 8-bit values: ``Image.pixels`` of
    a byte image is its bytes / 255, without any colour conversion."""
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as error:
        raise PassesError(f"Reading the colour picture failed: {error}") from None
    try:
        width, height = image.size
        channels = image.channels
        values = np.empty(width * height * channels, dtype=np.float32)
        image.pixels.foreach_get(values)
    finally:
        bpy.data.images.remove(image)
    pixels = values.reshape(height, width, channels)[::-1, :, :3]  # Blender: bottom row first
    return np.ascontiguousarray(np.round(pixels * 255.0).astype(np.uint8))


def configure_for_passes(copy: bpy.types.Scene, view_layer_name: str, path: Path) -> None:
    """Set up ``copy`` (a throwaway copy of the user's scene) to render the data passes of
    one view layer into a multilayer EXR at ``path``."""
    render = copy.render
    cycles = _cycles_settings(copy, "Rendering the passes")
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

    layer = _only_layer(copy, view_layer_name)
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


def configure_for_colour(copy: bpy.types.Scene, view_layer_name: str, path: Path) -> None:
    """Set up ``copy`` (a throwaway copy of the user's scene) to render the picture of one
    view layer as the scene's own lights, materials, world and colour management show it,
    quickly, into an 8-bit PNG at ``path``."""
    render = copy.render
    cycles = _cycles_settings(copy, "Rendering the colour picture for the canny unit")
    cycles.device = "CPU"
    cycles.use_adaptive_sampling = False
    cycles.time_limit = 0.0
    cycles.max_bounces = min(cycles.max_bounces, COLOUR_MAX_BOUNCES)
    cycles.samples = COLOUR_SAMPLES_UNDENOISED
    cycles.use_denoising = False
    try:
        cycles.denoiser = "OPENIMAGEDENOISE"  # not an option in a Blender built without it
    except TypeError:
        pass
    else:
        cycles.samples = COLOUR_SAMPLES
        cycles.use_denoising = True
        cycles.denoising_input_passes = "RGB_ALBEDO_NORMAL"
        # Albedo and normal straight from the render: as clean for edges as "ACCURATE",
        # which runs the denoiser on them too, and takes half the time at 512x384.
        cycles.denoising_prefilter = "FAST"
        if hasattr(cycles, "denoising_use_gpu"):
            cycles.denoising_use_gpu = False
    render.use_motion_blur = False
    render.use_border = False
    render.use_multiview = False
    render.use_compositing = False  # the picture as rendered, not as composited
    render.use_sequencer = False
    render.use_persistent_data = False
    render.dither_intensity = 0.0  # dither is noise: the picture as rendered, nothing added
    layer = _only_layer(copy, view_layer_name)
    if hasattr(layer, "cycles"):
        layer.cycles.use_denoising = True  # the scene-wide setting decides

    settings = render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5.0 groups formats by media type
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    settings.compression = 0  # a temporary file: speed over size
    if hasattr(settings, "color_management"):
        settings.color_management = "FOLLOW_SCENE"  # the scene's view transform and look
    render.use_file_extension = False
    render.filepath = str(path)


def _cycles_settings(copy: bpy.types.Scene, what: str) -> bpy.types.PropertyGroup:
    """``copy.cycles``, with Cycles as the copy's engine."""
    try:
        copy.render.engine = "CYCLES"
        return copy.cycles
    except (TypeError, AttributeError):  # not an engine, or its settings not registered
        raise PassesError(f"{what} needs Cycles: enable the Cycles add-on in Preferences") from None


def _only_layer(copy: bpy.types.Scene, view_layer_name: str) -> bpy.types.ViewLayer:
    """Render only the view layer ``view_layer_name``, at the scene's sample count."""
    for layer in copy.view_layers:
        layer.use = layer.name == view_layer_name
    layer = copy.view_layers.get(view_layer_name)
    if layer is None:
        raise PassesError(f"View layer {view_layer_name!r} not found")
    layer.samples = 0  # a per-layer override would replace the samples set here
    return layer
