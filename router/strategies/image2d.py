"""2D strategy: one encoder pass per image, all boxes decoded in batches."""

from __future__ import annotations

import numpy as np

from router.casefile import label_dtype
from router.strategies import BoxPredictor, OnSlice, Strategy
from router.strategies.labels import paint_masks

BOX_BATCH = 64


def segment_image2d(image: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 4) boxes -> (H, W) label map (label i for boxes[i-1])."""
    segs = np.zeros(image.shape[:2], label_dtype(len(boxes)))
    if len(boxes) == 0:
        return segs
    predictor.set_image(image)
    # Batches bound memory: a microscopy image may carry hundreds of boxes.
    for start in range(0, len(boxes), BOX_BATCH):
        chunk = boxes[start : start + BOX_BATCH]
        masks = predictor.predict(chunk)
        paint_masks(segs, masks, np.arange(start + 1, start + len(chunk) + 1))
    return segs


def _run(image: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, on_slice: OnSlice | None = None) -> np.ndarray:
    return segment_image2d(image, boxes, predictor)


STRATEGY = Strategy("image2d", dim=2, run=_run)
