"""Painting per-box masks into one label map."""

from __future__ import annotations

import numpy as np


def paint_masks(label_map: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> None:
    """Paint (N, ...) bool `masks` with `labels` (N,) into `label_map` (...), in place.

    Later boxes win where masks overlap, whatever order the masks arrive in: a pixel only takes a
    label larger than the one it holds (label i belongs to box i, so larger means later).
    """
    for mask, label in zip(masks, labels, strict=True):
        region = mask & (label_map < label)
        label_map[region] = label
