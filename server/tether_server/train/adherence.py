"""How closely generated images follow their control units, measured on synthetic scenes.

- Silhouettes (depth units): draw scene S and the same scene without one of its shapes,
  S' = S.without(k), with the same seed — each with its own caption, and with its own
  depth map when a unit is used. The generated silhouette is where the two images differ
  (`changed`); the control's silhouette is where shape k is seen in S (`Scene.ids`).
  Their intersection over union says whether the model put the shape where the depth map
  has it: a model that ignores the map draws the shape somewhere else, or redraws the
  whole picture when the caption changes.
- Edges (canny units): OpenCV's canny edges of the generated image against the control's
  edges, as an F-score with a tolerance of a few pixels (`edge_fscore`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..jobs import CANNY_THRESHOLDS

CHANGE_THRESHOLD = 0.15  # on 0..1 colours: a shape against its background changes more
EDGE_TOLERANCE = 2  # pixels (Chebyshev distance) between matching edges


def changed(a: np.ndarray, b: np.ndarray, threshold: float = CHANGE_THRESHOLD) -> np.ndarray:
    """Where two (H, W, 3) float images in [0, 1] differ by more than `threshold` in any
    channel, as a boolean (H, W) mask."""
    return np.abs(a - b).max(axis=-1) > threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def edges(image: np.ndarray) -> np.ndarray:
    """Canny edges of an (H, W, 3) float image in [0, 1] at the server's default
    thresholds, as a boolean mask."""
    grey = cv2.cvtColor(
        np.floor(np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY
    )
    return cv2.Canny(grey, *CANNY_THRESHOLDS) > 0


def edge_fscore(found: np.ndarray, expected: np.ndarray, tolerance: int = EDGE_TOLERANCE) -> float:
    """F-score of edge masks: precision = share of `found` edge pixels within `tolerance`
    pixels of an `expected` one, recall = share of `expected` within `tolerance` of a
    `found` one."""
    kernel = np.ones((2 * tolerance + 1,) * 2, np.uint8)
    near_expected = cv2.dilate(expected.astype(np.uint8), kernel) > 0
    near_found = cv2.dilate(found.astype(np.uint8), kernel) > 0
    precision = (found & near_expected).sum() / max(found.sum(), 1)
    recall = (expected & near_found).sum() / max(expected.sum(), 1)
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0
