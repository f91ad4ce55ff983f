"""What the strategies' working-memory estimates share (each strategy's `working_bytes`; router/memory.py
adds the case's arrays and the model's buffers). Upper bounds, in bytes; measured against peaks in
docs/results.md, "Memory guard"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmbeddingRoom:
    """The predictor's embedding cache as an estimate sees it: bytes of one embedding
    (models.registry.ModelSpec.embedding_bytes) and the cache's budget; and the side of the square frame
    its masks are upsampled to before they are cropped and resized (ModelSpec.prompt_frame: 256 for
    LiteMedSAM, 1024 for EfficientViT-SAM), which sizes the resize matrices."""

    embedding_bytes: int
    budget_bytes: int
    mask_frame: int = 256

    def cached(self, images: int) -> int:
        """Bytes held when `images` images are encoded with a cache key: the cached ones (up to the budget)
        and the current one."""
        return min(self.budget_bytes, images * self.embedding_bytes) + self.embedding_bytes


def max_overlap(lows: np.ndarray, highs: np.ndarray, size: int) -> int:
    """Most inclusive [low, high] ranges covering one index of 0..size-1 (boxes active on one slice)."""
    if len(lows) == 0:
        return 0
    counts = np.zeros(size + 1, np.int64)
    np.add.at(counts, np.clip(lows, 0, size - 1), 1)
    np.add.at(counts, np.clip(highs, 0, size - 1) + 1, -1)
    return int(np.cumsum(counts).max())


def covered(lows: np.ndarray, highs: np.ndarray, size: int) -> int:
    """How many indices of 0..size-1 some inclusive [low, high] range covers (slices a sweep encodes)."""
    hit = np.zeros(size, bool)
    for low, high in zip(lows, highs, strict=True):
        hit[max(low, 0) : min(high, size - 1) + 1] = True
    return int(hit.sum())


def most_active(shape: tuple[int, ...], boxes: np.ndarray) -> int:
    """(D, H, W) volume, (N, 6) boxes -> the most boxes active on one slice of any of the three axes."""
    return max(max_overlap(boxes[:, axis], boxes[:, axis + 3], extent)
               for axis, extent in zip((2, 1, 0), shape, strict=True))


def slice_bytes(pixels: int, masks: int) -> int:
    """Per slice: `masks` bool masks, paint_masks' two bool temporaries, upsampling's float32 region."""
    return masks * pixels + 2 * pixels + 4 * pixels
