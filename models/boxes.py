"""Box geometry shared by strategies, demo data and tests (numpy only).

2D boxes are `[x0, y0, x1, y1]`, 3D boxes `[x0, y0, z0, x1, y1, z1]`: pixel indices, inclusive, x first,
while arrays are indexed (y, x) or (z, y, x).
"""

from __future__ import annotations

import numpy as np


def grow_box(box: np.ndarray, margin: float, original_hw: tuple[int, int]) -> np.ndarray:
    """(4,) [x0, y0, x1, y1] -> the box grown by `margin` pixels on each side, clipped to the image."""
    height, width = original_hw
    grown = box.astype(np.float64) + np.array([-margin, -margin, margin, margin])
    return np.clip(grown, 0, [width - 1, height - 1, width - 1, height - 1])


def clip_to_boxes(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks, (N, 4) [x0, y0, x1, y1] boxes -> the masks with every pixel outside its box
    cleared, in place (and returned). Box coordinates are rounded outwards to whole pixels."""
    height, width = masks.shape[1:]
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        top, left = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
        bottom, right = min(int(np.ceil(y1)) + 1, height), min(int(np.ceil(x1)) + 1, width)
        mask[:top] = False
        mask[bottom:] = False
        mask[:, :left] = False
        mask[:, right:] = False
    return masks


def mask_bbox(mask: np.ndarray) -> np.ndarray | None:
    """(H, W) bool -> [x0, y0, x1, y1] inclusive bounding box, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.float64)


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) or (D, H, W) label map with labels 1..N -> (N, 4) or (N, 6) int64 tight inclusive boxes.

    A label missing from the map raises ValueError (its box would be undefined).
    """
    boxes = []
    for label in range(1, int(labels.max(initial=0)) + 1):
        where = np.argwhere(labels == label)
        if where.size == 0:
            raise ValueError(f"label {label} does not occur in the label map")
        low, high = where.min(axis=0), where.max(axis=0)
        boxes.append(np.concatenate([low[::-1], high[::-1]]))  # array axes are (y, x) / (z, y, x); boxes x first
    return np.array(boxes, np.int64).reshape(-1, 2 * labels.ndim)
