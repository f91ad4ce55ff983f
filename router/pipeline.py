"""One case end to end: read -> route -> strategy -> predictor -> segs (-> written).

`segment_file` is the one path every runner takes (predict.py, the benchmark, a cluster worker); the
runners keep only their loop, their messages and their exit status.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pool import ModelPool
from router.casefile import Case, read_case, write_segs
from router.routing import Route, RoutingTable
from router.strategies import OnSlice
from router.strategies.registry import get_strategy

# progress(case, route, slices) -> a context manager giving the per-slice callback (slices: 0 for 2D)
Progress = Callable[[Case, Route, int], AbstractContextManager[OnSlice]]
# on_route(case, route) is called once the case is read and routed, before any model runs
OnRoute = Callable[[Case, Route], None]


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


def segment_case(case: Case, route: Route, pool: ModelPool, on_slice: OnSlice | None = None) -> np.ndarray:
    """Run `route` on `case` and return the label map of the case's spatial shape."""
    strategy = get_strategy(route.strategy)
    predictor = pool.get(route.model)
    predictor.reset()  # embeddings never carry over from one case to the next
    try:
        return strategy.run(case.image, case.boxes, predictor, on_slice=on_slice, **route.params)
    finally:
        predictor.reset()  # free the cache's memory between cases


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
) -> CaseResult:
    """Read the case at `path`, route it, segment it and, with `output`, write `segs` there atomically.

    Raises router.casefile.CaseError for a case that cannot be segmented (one-line message); any other
    exception is a failure of this case only.
    """
    start = time.perf_counter()
    case = read_case(path)
    route = table.route(case.dim, case.modality, pool.available)
    if on_route is not None:
        on_route(case, route)
    with (progress or _no_progress)(case, route, slice_steps(case, route)) as on_slice:
        segs = segment_case(case, route, pool, on_slice=on_slice)
    if output is not None:
        write_segs(output, segs)
    return CaseResult(case, route, pool.resolve_precision(route.model), segs, time.perf_counter() - start)
