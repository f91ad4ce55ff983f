"""2D strategy: one encoder pass per image, all boxes decoded in batches; optionally, small boxes decoded
in zoomed crops (router.strategies.zoom), a few encoder passes more."""

from __future__ import annotations

from typing import Any

import numpy as np

from router.casefile import label_dtype
from router.strategies import BoxPredictor, OnSlice, Strategy
from router.strategies.labels import paint_masks
from router.strategies.zoom import plan_windows

BOX_BATCH = 64


def segment_image2d(
    image: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, zoom_below: float = 0.0, tile_scale: float = 4.0,
    min_window: int = 256, max_windows: int = 64,
) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 4) boxes -> (H, W) label map (label i for boxes[i-1]).

    zoom_below: boxes whose longer side is under this fraction of the image's longer side are decoded
    in crops of about 1.5 x tile_scale x their side, at least min_window px (0: never; see
    router.strategies.zoom), and in at most max_windows crops (tiles grow to keep to it).
    """
    segs = np.zeros(image.shape[:2], label_dtype(len(boxes)))
    if len(boxes) == 0:
        return segs
    for window, indices in plan_windows(boxes, image.shape[:2], zoom_below, tile_scale, min_window, max_windows):
        if window is None:
            predictor.set_image(image)
            target, offset = segs, np.zeros(4, np.int64)
        else:
            y0, x0, y1, x1 = window
            predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
            target, offset = segs[y0:y1, x0:x1], np.array([x0, y0, x0, y0])
        # Batches bound memory: a microscopy image may carry hundreds of boxes.
        for start in range(0, len(indices), BOX_BATCH):
            chunk = indices[start : start + BOX_BATCH]
            paint_masks(target, predictor.predict(boxes[chunk] - offset), chunk + 1)
    return segs


def check_zoom(zoom_below: float = 0.0, tile_scale: float = 4.0, min_window: int = 256, max_windows: int = 64) -> None:
    """Raise ValueError unless 0 <= zoom_below <= 1, tile_scale >= 1, min_window >= 16 and max_windows >= 1."""
    if not 0.0 <= zoom_below <= 1.0 or tile_scale < 1.0 or min_window < 16 or max_windows < 1:
        raise ValueError(f"need 0 <= zoom_below <= 1, tile_scale >= 1, min_window >= 16 and max_windows >= 1, "
                         f"got {zoom_below}, {tile_scale}, {min_window} and {max_windows}")


def _run(
    image: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, on_slice: OnSlice | None = None, **params: Any
) -> np.ndarray:
    return segment_image2d(image, boxes, predictor, **params)


STRATEGY = Strategy(
    "image2d", dim=2, run=_run, params=("zoom_below", "tile_scale", "min_window", "max_windows"), check=check_zoom
)
