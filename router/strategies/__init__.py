"""Segmentation strategies: pure logic over a predictor (`set_image(image, key)`, `predict(boxes)`).

A strategy never knows which model it drives: it sees only the `BoxPredictor` protocol below.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import numpy as np


class BoxPredictor(Protocol):
    """What a strategy needs of a predictor (models.predictor.SamPredictor is one)."""

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> None:
        """Make `image` ((H, W, 3) or (H, W) uint8) current; a `key` lets an embedding cache reuse it."""

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) [x0, y0, x1, y1] boxes in the current image's pixels -> (N, H, W) bool masks."""
