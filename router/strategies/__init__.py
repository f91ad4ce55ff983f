"""Segmentation strategies: pure logic over a predictor (`set_image(image, key=key)`, `predict(boxes)`).

A strategy never knows which model it drives: it sees only the `BoxPredictor` protocol below. Each
strategy module defines one `Strategy` subclass; `router.strategies.registry` maps names to instances.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from models.predictor import Embedding
    from router.strategies.footprint import EmbeddingRoom

OnSlice = Callable[[], None]


class BoxPredictor(Protocol):
    """What a strategy needs of a predictor (models.predictor.SamPredictor is one)."""

    def set_image(self, image: np.ndarray, *, key: Hashable | None = None) -> None:
        """Make `image` ((H, W, 3) or (H, W) uint8) current; a `key` (keyword-only) lets an embedding cache
        reuse it."""

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) [x0, y0, x1, y1] boxes in the current image's pixels -> (N, H, W) bool masks."""


class ScoredBoxPredictor(BoxPredictor, Protocol):
    """A BoxPredictor that also tells how sure it is of each mask (models.predictor.SamPredictor is one)."""

    def predict_scored(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes -> ((N, H, W) bool masks, (N,) stability scores in [0, 1]; low: doubtful)."""


class EmbeddingPredictor(BoxPredictor, Protocol):
    """A BoxPredictor whose current embedding can be read and replaced (models.predictor.SamPredictor is
    one): a strategy may decode a slice it never encoded from a blend of its neighbours' embeddings."""

    def get_image_embedding(self) -> Embedding:
        """The current image's embedding."""

    def set_image_embedding(self, embedding: Embedding) -> None:
        """Make `embedding` current, as set_image would (no encoder pass)."""


@dataclass(frozen=True, kw_only=True)
class StrategyParams:
    """Base of every strategy's parameters: a frozen dataclass whose fields are what a routing table may set
    ([<section>.<strategy>], by field name), whose defaults are what router/routes.toml ships, and whose
    `__post_init__` raises ValueError (or TypeError) on values the strategy cannot run with."""

    def __post_init__(self) -> None:
        """Nothing to check here; subclasses check their fields and call this (a cooperative chain)."""


Params = TypeVar("Params", bound=StrategyParams)


class Strategy(ABC, Generic[Params]):
    """One way of segmenting a case: what the router, the memory guard and the runner ask of it.

    name: the routing table's name for it. dim: the case dimensionality it serves (2 or 3).
    params: its StrategyParams subclass; the routing table overrides its fields by name.
    """

    name: ClassVar[str]
    dim: ClassVar[int]
    params: ClassVar[type[StrategyParams]]

    @abstractmethod
    def run(self, image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: Params,
            on_slice: OnSlice | None = None) -> np.ndarray:
        """The label map of the image's spatial shape, label i for boxes[i - 1]; `on_slice` is called once per
        slice visited (3D progress). `predictor`: the route's model as the case sees it."""

    @abstractmethod
    def working_bytes(self, shape: tuple[int, ...], boxes: np.ndarray, params: Params,
                      embeddings: EmbeddingRoom) -> int:
        """An upper bound of the bytes run() allocates besides the image (label map, masks, votes, cached
        embeddings) for a label map of `shape` and boxes clipped to it; `embeddings`: the predictor's cache."""

    @abstractmethod
    def boxes_per_call(self, shape: tuple[int, ...], boxes: np.ndarray, params: Params) -> int:
        """The most boxes run() passes to one predict() call (the decoder batch it may reach, whose buffers
        router/memory.py counts)."""

    def slice_count(self, boxes: np.ndarray, params: Params) -> int:
        """How many times run() will call on_slice: 0 unless a strategy visits slices."""
        return 0
