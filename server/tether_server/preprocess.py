"""Control units as sent -> control maps at the output size.

1. Decode the unit's image (PNG/JPEG/WebP or a raw buffer, floats kept as floats).
2. Run its preprocessor: canny (OpenCV) on the image resampled to the output's scale, so
   that edges are one output pixel thin; invert per pixel; depth and normal buffers
   through the SDK's own `tether.maps` at their native size, so hosts converting locally
   and the server agree to the bit.
3. Fit the map to the output size (`resize.fit`: crop or fill as the mode says), without
   mixing background into foreground for depth and normal maps.

Bad input raises InvalidArgument naming the unit and field.
"""

from __future__ import annotations

import cv2
import numpy as np
from tether import maps
from tether._proto.tether.v1 import tether_pb2

from . import images, resize
from .errors import InvalidArgument, invalid

# Input images may be larger than outputs (hosts send their full buffers); past this a
# file is refused before it is decoded.
MAX_INPUT_PIXELS = 4096 * 4096

RESIZE_MODES = {
    tether_pb2.RESIZE_MODE_UNSPECIFIED: "crop",
    tether_pb2.RESIZE_MODE_CROP_AND_RESIZE: "crop",
    tether_pb2.RESIZE_MODE_JUST_RESIZE: "resize",
    tether_pb2.RESIZE_MODE_RESIZE_AND_FILL: "fill",
}
DEFAULT_CANNY = (100, 200)


def control_map(
    unit: tether_pb2.ControlUnit, kind: str, size: tuple[int, int] | None, where: str
) -> np.ndarray:
    """The (height, width, 3) float32 map in [0, 1] for `unit`, fitted to size = (width,
    height), or at the image's own size when `size` is None. `kind` is the control model's
    kind (how to resample it)."""
    if unit.resize not in RESIZE_MODES:
        raise invalid(f"{where}.resize", "must be JUST_RESIZE, CROP_AND_RESIZE or RESIZE_AND_FILL")
    pixels = images.decode(unit.image, f"{where}.image", MAX_INPUT_PIXELS)
    mode = RESIZE_MODES[unit.resize]
    preprocessor = unit.WhichOneof("preprocessor")

    def fitted(rgb: np.ndarray, resample_as: str) -> np.ndarray:
        return rgb if size is None else resize.fit(rgb, *size, mode, resample_as)

    if preprocessor == "depth":
        return fitted(_depth(pixels, unit.depth, f"{where}.depth"), "depth")
    if preprocessor == "normal":
        return fitted(_normals(pixels, unit.normal, f"{where}.normal"), "normal")
    rgb = images.to_rgb(pixels, f"{where}.image")
    if preprocessor == "canny":
        if size is not None:
            rgb = resize.rescale(rgb, *size, mode, "photo")
        return fitted(_canny(rgb, unit.canny, f"{where}.canny"), "canny")
    if preprocessor == "invert":
        return fitted(1.0 - rgb, kind)
    return fitted(rgb, kind)


def _canny(rgb: np.ndarray, settings: tether_pb2.CannyPreprocessor, where: str) -> np.ndarray:
    low = settings.low if settings.HasField("low") else DEFAULT_CANNY[0]
    high = settings.high if settings.HasField("high") else DEFAULT_CANNY[1]
    if not 0 <= low <= high <= 255:
        raise invalid(where, f"thresholds must satisfy 0 <= low <= high <= 255 (got {low}, {high})")
    grey = cv2.cvtColor((rgb * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, low, high)
    return np.repeat(edges[:, :, None], 3, axis=2).astype(np.float32) / 255.0


def _depth(pixels: np.ndarray, settings: tether_pb2.DepthPreprocessor, where: str) -> np.ndarray:
    buffer = settings.buffer
    if pixels.dtype != np.float32:
        raise invalid(where, "needs a float buffer (raw F16 or F32), not 8-bit pixels")
    channels = pixels.shape[2]
    try:
        if buffer == tether_pb2.DEPTH_BUFFER_POSITIONS:
            if channels not in (3, 4):
                raise invalid(where, f"view-space positions need 3 channels (got {channels})")
            return maps.depth_from_positions(pixels[:, :, :3], bottom_up=settings.bottom_up)
        if channels != 1:
            raise invalid(where, f"a depth buffer has 1 channel (got {channels})")
        if buffer in (tether_pb2.DEPTH_BUFFER_UNSPECIFIED, tether_pb2.DEPTH_BUFFER_LINEAR):
            far = settings.far if settings.far > 0 else None
            return maps.depth_from_linear(pixels, far=far, bottom_up=settings.bottom_up)
        if buffer in (tether_pb2.DEPTH_BUFFER_HARDWARE, tether_pb2.DEPTH_BUFFER_HARDWARE_REVERSED):
            return maps.depth_from_buffer(
                pixels,
                near=settings.near,
                far=settings.far,
                reversed_z=buffer == tether_pb2.DEPTH_BUFFER_HARDWARE_REVERSED,
                bottom_up=settings.bottom_up,
            )
    except ValueError as error:
        raise InvalidArgument(f"{where}: {error}") from None
    raise invalid(f"{where}.buffer", "must be LINEAR, HARDWARE, HARDWARE_REVERSED or POSITIONS")


def _normals(pixels: np.ndarray, settings: tether_pb2.NormalPreprocessor, where: str) -> np.ndarray:
    if pixels.dtype != np.float32:
        raise invalid(where, "needs a float buffer (raw F16 or F32) of signed normals")
    channels = pixels.shape[2]
    if channels not in (3, 4):
        raise invalid(where, f"a normal buffer has 3 or 4 channels (got {channels})")
    if np.isnan(pixels[:, :, :3]).any():
        raise invalid(where, "contains NaN; write a zero vector where there is no geometry")
    try:
        if settings.space in (tether_pb2.NORMAL_SPACE_UNSPECIFIED, tether_pb2.NORMAL_SPACE_VIEW):
            return maps.normals_from_view(
                pixels,
                y_down=settings.y_down,
                legacy=settings.legacy,
                bottom_up=settings.bottom_up,
            )
        if settings.space == tether_pb2.NORMAL_SPACE_WORLD:
            if len(settings.camera_to_world) != 16:
                raise invalid(
                    f"{where}.camera_to_world",
                    f"world-space normals need the camera's 4x4 world matrix as 16 floats, "
                    f"row-major (got {len(settings.camera_to_world)})",
                )
            if settings.y_down:
                raise invalid(f"{where}.y_down", "applies to view-space normals only")
            camera = np.array(settings.camera_to_world, dtype=np.float64).reshape(4, 4)
            return maps.normals_from_world(
                pixels, camera, legacy=settings.legacy, bottom_up=settings.bottom_up
            )
    except ValueError as error:
        raise InvalidArgument(f"{where}: {error}") from None
    raise invalid(f"{where}.space", "must be VIEW or WORLD")
