"""One case end to end: read -> route -> strategy -> predictor -> segs (-> written).

`segment_file` is the one path every runner takes (predict.py, the benchmark, a cluster worker); the
runners keep only their loop, their messages and their exit status.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pool import ModelPool
from models.predictor import Embedding, SamPredictor
from router.casefile import (
    ArrayHeader,
    Case,
    CaseError,
    case_kind,
    output_is_complete,
    read_case,
    read_headers,
    read_small_array,
    segs_shape,
    write_segs,
)
from router.memory import Warmth, available_bytes, estimate_case, gib, plan_case
from router.routing import Route, RoutingTable
from router.strategies import OnSlice
from router.strategies.registry import get_strategy

# progress(case, route, slices) -> a context manager giving the per-slice callback (slices: 0 for 2D)
Progress = Callable[[Case, Route, int], AbstractContextManager[OnSlice]]
# on_route(case, route) is called once the case is read and routed, before any model runs
OnRoute = Callable[[Case, Route], None]
# memory() -> bytes this process may still allocate, None when unknown (router.memory.available_bytes)
Memory = Callable[[], int | None]
BOXES_MAX_BYTES = 65535 * 6 * 8  # the most boxes a case may hold, as float64: larger is not read for the guard

log = logging.getLogger("seg")


@dataclass(frozen=True)
class CaseResult:
    """What one case produced: the case as read, its route and precision, the label map and the seconds
    from reading the case to its label map, written when an output was given."""

    case: Case
    route: Route
    precision: str
    segs: np.ndarray
    seconds: float


def slice_steps(case: Case, route: Route) -> int:
    """How many slices a 3D case's strategy will visit (the total of its progress bar); 0 for 2D."""
    return get_strategy(route.strategy).slice_count(case.boxes, route.params)


@dataclass(frozen=True)
class Decoding:
    """A predictor as one case's strategy sees it (router.strategies.ScoredBoxPredictor): `predict` decodes
    `batch` boxes per call (None: the predictor's own), so the predictor is never reconfigured."""

    predictor: SamPredictor
    batch: int | None = None

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> None:
        self.predictor.set_image(image, key)

    def get_image_embedding(self) -> Embedding:
        return self.predictor.get_image_embedding()

    def set_image_embedding(self, embedding: Embedding) -> None:
        self.predictor.set_image_embedding(embedding)

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        return self.predictor.predict(boxes, batch=self.batch)

    def predict_scored(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predictor.predict_scored(boxes, batch=self.batch)


def segment_case(
    case: Case, route: Route, predictor: SamPredictor, on_slice: OnSlice | None = None, decode_batch: int | None = None
) -> np.ndarray:
    """Run `route` on `case` with `predictor` (the route's model) and return the label map of the case's
    spatial shape; `decode_batch`: boxes per decoder call for this case (None: the predictor's own)."""
    strategy = get_strategy(route.strategy)
    predictor.reset()  # embeddings never carry over from one case to the next
    try:
        return strategy.run(case.image, case.boxes, Decoding(predictor, decode_batch), route.params, on_slice)
    finally:
        predictor.reset()  # free the cache's memory between cases


def plan_memory(
    path: Path, headers: dict[str, ArrayHeader], route: Route, warmth: Warmth, cache_bytes: int, default_batch: int,
    memory: Memory = available_bytes,
) -> int:
    """The decoder batch the case at `path` can run with in the memory left, from its npy `headers`
    (nothing large is decompressed): `default_batch` when it fits. `warmth` and `cache_bytes` are those of
    the route's predictor, compiled before `memory()` is asked. Raises CaseError naming the need and the
    room when the case cannot fit at all."""
    if "imgs" not in headers:
        return default_batch  # read_case names the missing key
    dim, _ = case_kind(path)
    boxes = read_small_array(path, "boxes", headers, BOXES_MAX_BYTES)
    estimate = estimate_case(dim, headers, boxes, route, warmth, cache_bytes)
    available = memory()
    batch = plan_case(estimate, available, default_batch)
    if batch != default_batch:
        log.warning("%s: decoding %d boxes at a time to fit in memory (needs %s at %d, %s available)",
                    path.name, batch, gib(estimate.by_batch[default_batch]), default_batch, gib(available or 0))
    return batch


@contextlib.contextmanager
def _no_progress(case: Case, route: Route, slices: int) -> Iterator[OnSlice]:
    yield lambda: None


def segment_file(
    path: Path,
    table: RoutingTable,
    pool: ModelPool,
    output: Path | None = None,
    on_route: OnRoute | None = None,
    progress: Progress | None = None,
    memory: Memory | None = available_bytes,
) -> CaseResult:
    """Read the case at `path`, route it, segment it and, with `output`, write `segs` there atomically.

    memory: what the process may still allocate (None: no memory guard). Before the image is
    decompressed, its npy header gives the case's need (router.memory); a case that fits only with
    fewer boxes per decoder call gets that, one that cannot fit raises CaseError.
    Raises router.casefile.CaseError for a case that cannot be segmented (one-line message); any other
    exception is a failure of this case only.
    """
    start = time.perf_counter()
    dim, modality = case_kind(path)
    route = table.route(dim, modality, pool.available)
    decode_batch = None
    if memory is not None:
        headers = read_headers(path)  # a file that is not an npz is refused here, before a model compiles
        predictor = pool.get(route.model)  # compiled first: its memory is then part of what is already used
        warmth = Warmth(predictor.encoder_calls > 0, predictor.decoded_batch)
        decode_batch = plan_memory(path, headers, route, warmth, predictor.cache.budget_bytes,
                                   predictor.decode_batch, memory)
    case = read_case(path)
    if on_route is not None:
        on_route(case, route)
    with (progress or _no_progress)(case, route, slice_steps(case, route)) as on_slice:
        segs = segment_case(case, route, pool.get(route.model), on_slice=on_slice, decode_batch=decode_batch)
    if output is not None:
        write_segs(output, segs)
    return CaseResult(case, route, pool.resolve_precision(route.model), segs, time.perf_counter() - start)


def is_done(path: Path, output: Path) -> bool:
    """Whether `output` already holds the whole label map of the case at `path` (`--continue-prediction`):
    a `segs` of the image's spatial shape, from its header. Missing, truncated or wrong: not done."""
    if not output.is_file():
        return False
    try:
        dim, _ = case_kind(path)
        image = read_headers(path).get("imgs")
    except CaseError:
        return False
    shape = None if image is None else segs_shape(dim, image)
    return shape is not None and output_is_complete(output, shape)
