"""Shape-based interpolation of masks between two slices: what a skipped slice takes instead of a pass.

A slice between two decoded ones gets the zero level of their signed distance maps, blended by distance
(Raya and Udupa's shape-based interpolation): an object that grows, shrinks or shifts between the two
slices does so smoothly in between, which averaging the masks themselves would not give.

The distances are OpenCV's `distanceTransform(src, DIST_L2, 5)`, a 5x5 chamfer approximation of the
Euclidean distance (steps 1, 1.4 and 2.1969 px), which opencv-python computes in float32 through IPP;
`chamfer_distance` repeats that in numpy bit for bit (tests/test_resample.py checks it against
opencv-python), so that the runtime image needs no OpenCV.
"""

from __future__ import annotations

import numpy as np

_HV, _DIAG, _LONG = np.float32(1.0), np.float32(1.4), np.float32(2.1969)
_FAR = np.finfo(np.float32).max  # the border, and every pixel with no zero pixel in reach


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks of one shape ((H, W) here); 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _run_min(near: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(N, W) float32 -> (N, W) float32: d[j] = min(near[j], d[j - 1] + 1) in float32, all at once.

    The minimum over k <= j of near[k] + (j - k) is exact in float64 (float32 values plus integers), and
    rounding it once to float32 gives what adding 1 in float32 j - k times gives (tests/test_resample.py).
    """
    return (steps + np.minimum.accumulate(near.astype(np.float64) - steps, axis=1)).astype(np.float32)


def chamfer_distance(objects: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, H, W) float32: each True pixel's distance to the nearest False one of its image
    (0 on False pixels; float32's largest value where there is none), equal to
    cv2.distanceTransform(image.astype(uint8), cv2.DIST_L2, 5) per image.

    Two raster passes as OpenCV's distanceTransform_5x5, a row at a time for all images at once: each takes
    the two rows before it (float32 sums, as OpenCV's), then the in-row step as a running minimum.
    """
    count, height, width = objects.shape
    dist = np.full((count, height + 4, width + 4), _FAR, np.float32)  # two border rows and columns each side
    steps = np.arange(width, dtype=np.float64)
    with np.errstate(over="ignore"):  # _FAR + a step rounds back to _FAR, as in OpenCV
        for row in range(2, height + 2):  # forward: from the two rows above, then from the left
            up2, up1 = dist[:, row - 2], dist[:, row - 1]
            near = np.minimum.reduce([up2[:, 1:-3] + _LONG, up2[:, 3:-1] + _LONG, up1[:, :-4] + _LONG,
                                      up1[:, 1:-3] + _DIAG, up1[:, 2:-2] + _HV, up1[:, 3:-1] + _DIAG,
                                      up1[:, 4:] + _LONG])
            near = np.where(objects[:, row - 2], near, np.float32(0))
            dist[:, row, 2:-2] = _run_min(near, steps)
        for row in range(height + 1, 1, -1):  # backward: from the two rows below, then from the right
            down1, down2 = dist[:, row + 1], dist[:, row + 2]
            near = np.minimum.reduce([dist[:, row, 2:-2], down2[:, 3:-1] + _LONG, down2[:, 1:-3] + _LONG,
                                      down1[:, 4:] + _LONG, down1[:, 3:-1] + _DIAG, down1[:, 2:-2] + _HV,
                                      down1[:, 1:-3] + _DIAG, down1[:, :-4] + _LONG])
            dist[:, row, 2:-2] = _run_min(near[:, ::-1], steps)[:, ::-1]
    return dist[:, 2:-2, 2:-2]


def signed_distance(masks: np.ndarray) -> np.ndarray:
    """(H, W) or (N, H, W) bool -> float32 of the same shape: minus the distance to the background inside,
    the distance to the object outside (OpenCV's 5x5 chamfer approximation of the Euclidean distance, in
    pixels)."""
    if masks.ndim == 2:
        return signed_distance(masks[None])[0]
    distances = chamfer_distance(np.concatenate([~masks, masks]))
    return distances[: len(masks)] - distances[len(masks) :]


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
    near, far = signed_distance(np.stack([first[region], last[region]]))
    for step in range(count):
        weight = (step + 1) / (count + 1)
        out[step][region] = (1 - weight) * near + weight * far < 0
    return out
