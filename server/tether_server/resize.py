"""Fit a control map to the output size, as the A1111 ControlNet extension's resize modes do.

- "resize": stretch to the output size.
- "crop" (default): scale to cover the output keeping the aspect ratio, crop the centre.
- "fill": scale to fit inside keeping the aspect ratio, fill the borders.

Depth and normal maps have a background (black; (0.5, 0.5, 1)) that must not bleed into
the foreground at silhouettes: an edge pixel averaged with the background would claim a
surface that is not there. They are resampled with a coverage mask: foreground values are
averaged among themselves, and a pixel stays foreground where most of it was. Averaged
normals are renormalised, so that a silhouette pixel still holds a unit normal.
"""

from __future__ import annotations

import cv2
import numpy as np

RESIZE_MODES = ("crop", "resize", "fill")
LINE_KINDS = ("canny", "lineart", "scribble", "softedge", "mlsd")
BACKGROUNDS = {"depth": (0.0, 0.0, 0.0), "normal": (0.5, 0.5, 1.0)}


def scaled_size(w: int, h: int, width: int, height: int, mode: str) -> tuple[int, int]:
    """The size a (w, h) image is resampled to before cropping or filling."""
    if mode == "resize":
        return width, height
    scale = (max if mode == "crop" else min)(width / w, height / h)
    return max(round(w * scale), 1), max(round(h * scale), 1)


def rescale(image: np.ndarray, width: int, height: int, mode: str, kind: str) -> np.ndarray:
    """Only the resampling step of `fit`: detectors such as canny run on this, so that their
    lines are one output pixel thin, and `fit` then only crops or fills."""
    return _resample(image, *scaled_size(*image.shape[1::-1], width, height, mode), kind)


def fit(image: np.ndarray, width: int, height: int, mode: str, kind: str) -> np.ndarray:
    """(h, w, 3) float32 map -> (height, width, 3) float32 map."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scaled_w, scaled_h = scaled_size(w, h, width, height, mode)
    scaled = _resample(image, scaled_w, scaled_h, kind)
    if mode == "resize":
        return scaled
    if mode == "crop":
        left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
        return np.ascontiguousarray(scaled[top : top + height, left : left + width])
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = _fill_colour(image, kind)
    left, top = (width - scaled_w) // 2, (height - scaled_h) // 2
    canvas[top : top + scaled_h, left : left + scaled_w] = scaled
    return canvas


def _resample(image: np.ndarray, width: int, height: int, kind: str) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if kind not in BACKGROUNDS:
        return cv2.resize(image, (width, height), interpolation=interpolation)
    background = np.array(BACKGROUNDS[kind], dtype=np.float32)
    covered = np.any(np.abs(image - background) > 1e-6, axis=2).astype(np.float32)
    coverage = cv2.resize(covered, (width, height), interpolation=interpolation)
    summed = cv2.resize(image * covered[:, :, None], (width, height), interpolation=interpolation)
    foreground = coverage >= 0.5
    result = np.empty((height, width, 3), dtype=np.float32)
    result[:] = background
    result[foreground] = summed[foreground] / coverage[foreground][:, None]
    if kind == "normal":
        # Colours are affine in the vector's components (c = (1 ± n) / 2 per channel), so
        # the length is measured and restored on 2c - 1.
        vectors = result[foreground] * 2 - 1
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        result[foreground] = (vectors + 1) / 2
    return result


def _fill_colour(image: np.ndarray, kind: str) -> np.ndarray:
    if kind in LINE_KINDS:
        return np.zeros(3, dtype=np.float32)
    if kind in BACKGROUNDS:
        return np.array(BACKGROUNDS[kind], dtype=np.float32)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(np.float32)
