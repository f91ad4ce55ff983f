"""Shape-based interpolation of masks between two slices: what a skipped slice takes instead of a pass.

A slice between two decoded ones gets the zero level of their signed distance maps, blended by distance
(Raya and Udupa's shape-based interpolation): an object that grows, shrinks or shifts between the two
slices does so smoothly in between, which averaging the masks themselves would not give.
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks of one shape ((H, W) here); 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) float32: minus the distance to the background inside, the distance to the
    object outside (Euclidean, in pixels)."""
    inside = mask.astype(np.uint8)
    return (cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5) - cv2.distanceTransform(inside, cv2.DIST_L2, 5))


def interpolate_masks(first: np.ndarray, last: np.ndarray, count: int) -> np.ndarray:
    """The `count` (H, W) bool masks evenly between `first` and `last` ((H, W) bool, non-empty or both
    empty), by their signed distance maps: (count, H, W) bool. Work is confined to both masks' bounding
    box grown by one pixel, so the cost follows the object, not the slice."""
    height, width = first.shape
    out = np.zeros((count, height, width), bool)
    either = first | last
    if count == 0 or not either.any():
        return out
    rows, cols = np.flatnonzero(either.any(axis=1)), np.flatnonzero(either.any(axis=0))
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, width)
    region = (slice(y0, y1), slice(x0, x1))
    near, far = signed_distance(first[region]), signed_distance(last[region])
    for step in range(count):
        weight = (step + 1) / (count + 1)
        out[step][region] = (1 - weight) * near + weight * far < 0
    return out
