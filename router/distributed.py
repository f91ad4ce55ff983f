"""Cases as tasks on a running Dask cluster (`predict.py --scheduler ADDRESS`).

`DaskBackend` is router.runner's back-end for a cluster: the client (predict.py, through
router.runner.run_cases) submits one task per case, largest file first; each task runs on a worker
process, which builds its Segmenter from the run's RunConfig once (per thread) and reuses it for every
case it gets. Workers read the inputs and write the outputs themselves, on a folder every machine sees
at the same path; only a small `router.runner.CaseOutcome` travels back, never the label map: with it the
precision the case ran in and the worker that ran it (name, host, CPU name and class, the threads its models
run on), which run.json records per case (router.provenance), since the client's own CPU, precision and threads
say nothing of the workers' (`auto` and the default threads resolve on each worker). Outputs
are written atomically, so a worker that dies mid-case leaves no half-written output: the scheduler
gives its case to another worker (up to `distributed.scheduler.allowed-failures` worker deaths per case)
and the client removes the dead worker's temp file at the end.

Dask (`dask`, `distributed`, requirements-dev.txt) is imported here only: the runtime image and a
local run never need it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from router.casefile import remove_stale_temps
from router.messages import error_line, route_warnings, summary_line
from router.pipeline import RunConfig, Segmenter
from router.provenance import WorkerFacts
from router.runner import CaseOutcome, RunError, Warn

# (run configuration, thread id) -> Segmenter: one per worker thread, built on its first case. A predictor is not
# shared by two threads; with `dask worker --nthreads 1` that is one per process.
_SEGMENTERS: dict[tuple[RunConfig, int], Segmenter] = {}
_POOLS_LOCK = threading.Lock()


def _worker_threads(settings: RunConfig) -> int:
    """`settings.threads`, else the CPUs the worker process may use (models.hardware.cpu_budget) divided by
    its Dask threads."""
    if settings.threads:
        return settings.threads
    from distributed import get_worker

    from models.hardware import cpu_budget

    try:
        concurrent = get_worker().state.nthreads
    except ValueError:  # not inside a Dask worker (called directly)
        concurrent = 1
    return max(1, cpu_budget() // max(1, concurrent))


def worker_segmenter(settings: RunConfig) -> Segmenter:
    """This worker thread's Segmenter of the run's configuration, made on first use and kept for later cases."""
    key = (settings, threading.get_ident())
    with _POOLS_LOCK:
        if key not in _SEGMENTERS:
            _SEGMENTERS[key] = settings.segmenter(_worker_threads(settings))
        return _SEGMENTERS[key]


def worker_facts(threads: int | None) -> WorkerFacts:
    """This worker process's name (Dask's: `dask worker --name`, else its address), host and CPU, its models
    running on `threads`."""
    from distributed import get_worker

    try:
        name = str(get_worker().name)
    except ValueError:  # not inside a Dask worker (called directly)
        name = ""
    return WorkerFacts.here(name, threads)


def segment_task(path: str, output: str, settings: RunConfig) -> CaseOutcome:
    """One case on a worker, by the worker's Segmenter; errors become the result's line. A case that ran
    carries the precision it ran in and the worker's facts (worker_facts) with the threads of that Segmenter."""
    name = Path(path).name
    found: list[tuple[str, str]] = []
    try:
        segmenter = worker_segmenter(settings)
        result = segmenter.segment_file(
            Path(path), Path(output), on_route=lambda case, route: found.extend(route_warnings(case, route)))
    except Exception as error:  # one broken case must not stop the others
        return CaseOutcome(name, None, error_line(name, error), tuple(found))
    # the pool's threads, not settings.threads: without --threads each worker resolves its own (_worker_threads)
    return CaseOutcome(name, result.seconds, summary_line(result), tuple(found), result.route, result.precision,
                       worker_facts(segmenter.pool.threads))


class DaskBackend:
    """router.runner's back-end for the Dask cluster at `address` (or a scheduler file's path): every case
    is submitted at once, as a task; `settings` is the run's configuration, which each worker builds its
    Segmenter from."""

    submits_all = True

    def __init__(self, address: str, settings: RunConfig) -> None:
        self.address, self.settings = address, settings
        self._client: Any = None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Connected to the scheduler; RunError when Dask is not installed or no scheduler answers."""
        try:
            from distributed import Client
        except ImportError:
            raise RunError("error: --scheduler needs Dask: pip install -r requirements-dev.txt (dask, distributed)") \
                from None
        connect = {"scheduler_file": self.address} if Path(self.address).is_file() else {"address": self.address}
        try:
            client = Client(**connect, timeout="30s")
        except (OSError, TimeoutError) as error:  # no scheduler there (dask's connect timeout is an OSError)
            raise RunError(f"error: cannot reach the Dask scheduler at {self.address}: {error}") from error
        with client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    def outcomes(self, cases: Iterable[Path], output: Path, warn: Warn) -> Iterator[CaseOutcome]:
        """One task per case, largest file first; outcomes as the tasks end. `warn` is not called here:
        each outcome carries its task's warnings. At the end, the temp files of workers that died
        mid-write are removed (their cases were redone elsewhere)."""
        from distributed import as_completed

        cases, output = list(cases), output.resolve()
        # largest first: a big volume started last would leave the other workers idle at the end
        ordered = sorted(cases, key=lambda p: (-p.stat().st_size, p.name))
        token = f"{time.time_ns():x}"
        futures = [
            self._client.submit(segment_task, str(path.resolve()), str(output / path.name), self.settings,
                                key=f"segment-{path.name}-{token}", pure=False, priority=len(ordered) - rank)
            for rank, path in enumerate(ordered)
        ]
        for future in as_completed(futures):
            name = future.key.removeprefix("segment-").removesuffix(f"-{token}")
            try:
                outcome = future.result()
            except Exception as error:  # the task itself was lost: KilledWorker after repeated worker deaths
                outcome = CaseOutcome(name, None, error_line(name, error))
            yield outcome
        for path in cases:
            remove_stale_temps(output / path.name)
