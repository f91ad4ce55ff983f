"""OpenVINO session for one box-prompted SAM-family model: `set_image(image)` then `predict(boxes)`.

The predictor knows nothing about strategies; strategies know nothing about which model they drive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import openvino as ov

from models.compiled import CompiledSam, compile_sam
from models.registry import ModelSpec
from models.transforms import (
    longest_side_shape,
    postprocess_masks,
    preprocess,
    scale_boxes,
    stability_scores,
)

DEFAULT_CACHE_BYTES = 1 << 30
DEFAULT_DECODE_BATCH = 16  # boxes per decoder call (SamPredictor's decode_batch)


@dataclass(frozen=True)
class Embedding:
    """One encoded image: features (1, C, h, w) float32 and the image's original (H, W)."""

    features: np.ndarray
    original_hw: tuple[int, int]

    def blend(self, other: Embedding, weight: float) -> Embedding:
        """(1 - weight) x this + weight x `other`, features blended elementwise: an estimate of the embedding
        of an image between two neighbouring ones (a volume's slices), at a decoder pass's cost instead of an
        encoder pass's. Both must be of images of one size."""
        if other.original_hw != self.original_hw or other.features.shape != self.features.shape:
            raise ValueError(f"cannot blend embeddings of {self.original_hw} and {other.original_hw} images")
        features = (1.0 - weight) * self.features + weight * other.features
        return Embedding(features.astype(np.float32, copy=False), self.original_hw)


class EmbeddingCache:
    """Least-recently-used store of embeddings with a hard byte budget (never exceeded)."""

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._items: OrderedDict[Hashable, Embedding] = OrderedDict()

    def get(self, key: Hashable) -> Embedding | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, item: Embedding) -> None:
        size = item.features.nbytes
        if size > self.budget_bytes:
            return
        if key in self._items:
            self.used_bytes -= self._items.pop(key).features.nbytes
        while self.used_bytes + size > self.budget_bytes:
            self.used_bytes -= self._items.popitem(last=False)[1].features.nbytes
        self._items[key] = item
        self.used_bytes += size

    def clear(self) -> None:
        self._items.clear()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class SamPredictor:
    """A session on one compiled model (models.compiled.CompiledSam): the current image's embedding, an
    embedding cache and counts of the work done. It compiles nothing and reads no environment:
    `SamPredictor.compile(spec, ...)` compiles a model's IR (models.compiled.compile_sam) and makes one.

    cache_bytes: the embedding cache's budget. decode_batch: boxes per decoder call. The decoder's cost is per
        box whatever the batch, but its intermediates grow with it (the image embedding is repeated per box):
        16 keeps a 125-box image well under 1 GiB, where 64 peaked at 3 GiB.
    """

    def __init__(
        self, model: CompiledSam, cache_bytes: int = DEFAULT_CACHE_BYTES, decode_batch: int = DEFAULT_DECODE_BATCH
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.precision = model.precision  # the precision it was compiled at
        self._encoder = model.encoder.create_infer_request()
        self._decoder = model.decoder.create_infer_request()
        self.cache = EmbeddingCache(cache_bytes)
        self.decode_batch = decode_batch
        self.largest_decoded_batch = 0  # OpenVINO keeps the buffers of the largest batch run (router.memory)
        self.encoder_calls = 0
        self.decoder_calls = 0  # decoder infer calls (a call decodes up to decode_batch boxes), for benchmarks
        self.encoder_seconds = 0.0  # time in the encoder (preprocessing included), for benchmarks
        self._embedding: Embedding | None = None

    @classmethod
    def compile(
        cls, spec: ModelSpec, directory: Path | None = None, threads: int | None = None, precision: str = "fp32",
        cache_bytes: int = DEFAULT_CACHE_BYTES, decode_batch: int = DEFAULT_DECODE_BATCH,
        core: ov.Core | None = None, ov_cache: Path | None = None,
    ) -> Self:
        """A predictor on `spec`'s IR in `directory` compiled at `precision` on `threads`
        (models.compiled.compile_sam says which files, and how `directory`, `threads` and `ov_cache` default)."""
        return cls(compile_sam(spec, directory, threads, precision, core=core, ov_cache=ov_cache), cache_bytes,
                   decode_batch)

    def encode(self, image: np.ndarray) -> Embedding:
        """(H, W, 3) or grey (H, W) uint8 -> Embedding (always runs the encoder)."""
        start = time.perf_counter()
        tensor, _ = preprocess(image, self.spec)
        # share_inputs: OpenVINO reads the numpy buffers in place instead of copying them per call
        self._encoder.infer({0: tensor}, share_inputs=True)
        features = self._encoder.get_output_tensor(0).data.copy()
        self.encoder_calls += 1
        self.encoder_seconds += time.perf_counter() - start
        return Embedding(features, image.shape[:2])

    def set_image(self, image: np.ndarray, *, key: Hashable | None = None) -> None:
        """Make `image` the current one; with a `key`, reuse or fill the embedding cache. `key` is keyword-only:
        SAM's second positional argument is `image_format`, and code ported from SAM that passes "RGB" there
        must fail rather than key the cache on it."""
        embedding = self.cache.get(key) if key is not None else None
        if embedding is None:
            embedding = self.encode(image)
            if key is not None:
                self.cache.put(key, embedding)
        self._embedding = embedding

    def get_image_embedding(self) -> Embedding:
        """The current image's embedding (set_image first)."""
        if self._embedding is None:
            raise RuntimeError("call set_image() before get_image_embedding()")
        return self._embedding

    def set_image_embedding(self, embedding: Embedding) -> None:
        """Make `embedding` the current one, as if its image had been set (no encoder pass)."""
        self._embedding = embedding

    def predict(self, boxes: np.ndarray, batch: int | None = None) -> np.ndarray:
        """(N, 4) [x0, y0, x1, y1] boxes in original pixels -> (N, H, W) bool masks for the current image.

        batch: boxes per decoder call (None: `decode_batch`); the memory guard lowers it for a large case.
        """
        return self._decode(boxes, batch, scored=False)[0]

    def predict_scored(self, boxes: np.ndarray, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes -> ((N, H, W) bool masks, (N,) stability scores), as predict; the stability
        (models.transforms.stability_scores) is taken over the image's area of the low-resolution logits."""
        return self._decode(boxes, batch, scored=True)

    def _decode(self, boxes: np.ndarray, batch: int | None, scored: bool) -> tuple[np.ndarray, np.ndarray]:
        """Masks and, when `scored` (else zeros: 3D sweeps decode without them), stability scores."""
        if self._embedding is None:
            raise RuntimeError("call set_image() before predict()")
        step = batch or self.decode_batch
        original_hw = self._embedding.original_hw
        masks = np.zeros((len(boxes), *original_hw), bool)
        stability = np.zeros(len(boxes))
        prompt_boxes = scale_boxes(np.asarray(boxes).reshape(-1, 4), original_hw, self.spec)
        for start in range(0, len(boxes), step):
            chunk = prompt_boxes[start : start + step]
            self.largest_decoded_batch = max(self.largest_decoded_batch, len(chunk))
            self._decoder.infer({0: self._embedding.features, 1: np.ascontiguousarray(chunk)}, share_inputs=True)
            self.decoder_calls += 1
            logits = self._decoder.get_output_tensor(0).data
            if scored:
                side = logits.shape[-1]
                crop_h, crop_w = (-(-n * side // self.spec.prompt_frame) for n in
                                  longest_side_shape(*original_hw, self.spec.prompt_frame))
                stability[start : start + len(chunk)] = stability_scores(logits[:, 0, :crop_h, :crop_w])
            postprocess_masks(logits, original_hw, self.spec, out=masks[start : start + len(chunk)])
        return masks, stability

    def reset(self) -> None:
        """Forget the current image and every cached embedding (call between cases)."""
        self.cache.clear()
        self._embedding = None
