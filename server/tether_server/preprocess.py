"""Decoded control images -> control maps at the output size.

1. Run the unit's preprocessor: canny (OpenCV) on the image resampled to the output's
   scale, so that edges are one output pixel thin; invert per pixel; depth and normal
   buffers through the SDK's own `tether.maps` at their native size, so hosts converting
   locally and the server agree to the bit.
2. Fit the map to the output size (`resize.fit`: crop or fill as the mode says), without
   mixing background into foreground for depth and normal maps.

The settings arrive converted and checked (`jobs` turns the request's preprocessor
messages into the classes below); what needs the pixels (channels, NaN, near/far against
the data) is checked here and raises InvalidArgument naming the unit and field.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from tether import maps

from . import images, resize
from .errors import InvalidArgument, invalid


@dataclass(frozen=True)
class Canny:
    """Edges of a colour or grey image; thresholds on 8-bit values."""

    low: int
    high: int


@dataclass(frozen=True)
class Invert:
    """1 - value: black-on-white line art -> white-on-black line maps."""


@dataclass(frozen=True)
class Depth:
    """A depth buffer (see `tether.maps` for the conventions)."""

    buffer: str  # "linear", "hardware", "hardware_reversed" or "positions"
    near: float
    far: float  # for linear buffers, 0: no far plane
    bottom_up: bool


@dataclass(frozen=True)
class Normal:
    """A normal buffer: view space, or world space with the camera's world matrix."""

    camera_to_world: np.ndarray | None  # (4, 4) for world-space normals
    y_down: bool
    legacy: bool
    bottom_up: bool


Preprocessor = Canny | Invert | Depth | Normal | None


def control_map(
    pixels: np.ndarray,
    preprocessor: Preprocessor,
    kind: str,
    size: tuple[int, int] | None,
    mode: str,
    where: str,
) -> np.ndarray:
    """The (height, width, 3) float32 map in [0, 1] made from decoded `pixels`, fitted to
    size = (width, height) by the resize `mode`, or at the image's own size when `size`
    is None. `kind` is the control model's kind (how to resample the map)."""

    def fitted(rgb: np.ndarray, resample_as: str) -> np.ndarray:
        return rgb if size is None else resize.fit(rgb, *size, mode, resample_as)

    if isinstance(preprocessor, Depth):
        return fitted(_depth(pixels, preprocessor, f"{where}.depth"), "depth")
    if isinstance(preprocessor, Normal):
        return fitted(_normals(pixels, preprocessor, f"{where}.normal"), "normal")
    rgb = images.to_rgb(pixels, f"{where}.image")
    if isinstance(preprocessor, Canny):
        if size is not None:
            rgb = resize.rescale(rgb, *size, mode, "photo")
        return fitted(_canny(rgb, preprocessor), "canny")
    if isinstance(preprocessor, Invert):
        return fitted(1.0 - rgb, kind)
    return fitted(rgb, kind)


def _canny(rgb: np.ndarray, settings: Canny) -> np.ndarray:
    grey = cv2.cvtColor((rgb * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, settings.low, settings.high)
    return np.repeat(edges[:, :, None], 3, axis=2).astype(np.float32) / 255.0


def _depth(pixels: np.ndarray, settings: Depth, where: str) -> np.ndarray:
    if pixels.dtype != np.float32:
        raise invalid(where, "needs a float buffer (raw F16 or F32), not 8-bit pixels")
    channels = pixels.shape[2]
    try:
        if settings.buffer == "positions":
            if channels not in (3, 4):
                raise invalid(where, f"view-space positions need 3 channels (got {channels})")
            return maps.depth_from_positions(pixels[:, :, :3], bottom_up=settings.bottom_up)
        if channels != 1:
            raise invalid(where, f"a depth buffer has 1 channel (got {channels})")
        if settings.buffer == "linear":
            far = settings.far if settings.far > 0 else None
            return maps.depth_from_linear(pixels, far=far, bottom_up=settings.bottom_up)
        return maps.depth_from_buffer(
            pixels,
            near=settings.near,
            far=settings.far,
            reversed_z=settings.buffer == "hardware_reversed",
            bottom_up=settings.bottom_up,
        )
    except ValueError as error:
        raise InvalidArgument(f"{where}: {error}") from None


def _normals(pixels: np.ndarray, settings: Normal, where: str) -> np.ndarray:
    if pixels.dtype != np.float32:
        raise invalid(where, "needs a float buffer (raw F16 or F32) of signed normals")
    channels = pixels.shape[2]
    if channels not in (3, 4):
        raise invalid(where, f"a normal buffer has 3 or 4 channels (got {channels})")
    if np.isnan(pixels[:, :, :3]).any():
        raise invalid(where, "contains NaN; write a zero vector where there is no geometry")
    try:
        if settings.camera_to_world is None:
            return maps.normals_from_view(
                pixels,
                y_down=settings.y_down,
                legacy=settings.legacy,
                bottom_up=settings.bottom_up,
            )
        return maps.normals_from_world(
            pixels,
            settings.camera_to_world,
            legacy=settings.legacy,
            bottom_up=settings.bottom_up,
        )
    except ValueError as error:
        raise InvalidArgument(f"{where}: {error}") from None
