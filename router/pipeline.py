"""One case end to end: read -> route -> strategy -> predictor -> segs (-> written).

`segment_file` is the one path every runner takes (predict.py, the benchmark, a cluster worker); the
runners keep only their loop, their messages and their exit status.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pool import ModelPool
from router.casefile import (
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
    return get_strategy(route.strategy).slice_count(case.boxes, **route.params)


def segment_case(
    case: Case, route: Route, pool: ModelPool, on_slice: OnSlice | None = None, decode_batch: int | None = None
) -> np.ndarray:
    """Run `route` on `case` and return the label map of the case's spatial shape; `decode_batch`: boxes
    per decoder call for this case only (None: the predictor's own)."""
    strategy = get_strategy(route.strategy)
    predictor = pool.get(route.model)
    predictor.reset()  # embeddings never carry over from one case to the next
    default_batch = predictor.decode_batch
    predictor.decode_batch = decode_batch or default_batch
    try:
        return strategy.run(case.image, case.boxes, predictor, on_slice=on_slice, **route.params)
    finally:
        predictor.decode_batch = default_batch
        predictor.reset()  # free the cache's memory between cases


def plan_memory(path: Path, route: Route, pool: ModelPool, memory: Memory = available_bytes) -> int:
    """The decoder batch `path` can run with in the memory left, from its npy headers (nothing large is
    decompressed); raises CaseError naming the need and the room when it cannot fit at all."""
    headers = read_headers(path)
    predictor = pool.get(route.model)  # compiled first: its memory is then part of what is already used
    if "imgs" not in headers:
        return predictor.decode_batch  # read_case names the missing key
    dim, _ = case_kind(path)
    warmth = Warmth(predictor.encoder_calls > 0, predictor.decoded_batch)
    boxes = read_small_array(path, "boxes", headers, BOXES_MAX_BYTES)
    estimate = estimate_case(dim, headers, boxes, route.strategy, route.model, warmth, predictor.cache.budget_bytes)
    available = memory()
    batch = plan_case(estimate, available, predictor.decode_batch)
    if batch != predictor.decode_batch:
        log.warning("%s: decoding %d boxes at a time to fit in memory (needs %s at %d, %s available)",
                    path.name, batch, gib(estimate.by_batch[predictor.decode_batch]), predictor.decode_batch,
                    gib(available or 0))
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
    decode_batch = None if memory is None else plan_memory(path, route, pool, memory)
    case = read_case(path)
    if on_route is not None:
        on_route(case, route)
    with (progress or _no_progress)(case, route, slice_steps(case, route)) as on_slice:
        segs = segment_case(case, route, pool, on_slice=on_slice, decode_batch=decode_batch)
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
