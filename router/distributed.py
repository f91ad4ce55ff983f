"""Cases as tasks on a running Dask cluster (`predict.py --scheduler ADDRESS`).

The client (predict.py) submits one task per case, largest file first; each task runs on a worker
process, which builds its ModelPool once (per thread) and reuses it for every case it gets. Workers
read the inputs and write the outputs themselves, on a folder every machine sees at the same path;
only a small `TaskResult` travels back, never the label map. Outputs are written atomically, so a
worker that dies mid-case leaves no half-written output: the scheduler gives its case to another
worker (up to `distributed.scheduler.allowed-failures` worker deaths per case) and the client removes
the dead worker's temp file at the end.

Dask (`dask`, `distributed`, requirements-dev.txt) is imported here only: the runtime image and a
local run never need it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from models.pool import ModelPool
from router.casefile import remove_stale_temps
from router.efficiency import EfficiencyLog
from router.messages import done_line, error_line, route_warnings, summary_line
from router.pipeline import segment_file
from router.routing import RoutingTable

log = logging.getLogger("seg")


@dataclass(frozen=True)
class Settings:
    """What a worker needs to build its pool and table (hashable: the key of its cache). `threads`
    None: the CPUs the worker process may use (models.hardware.cpu_budget) divided by its Dask threads."""

    models: str | None
    threads: int | None
    precision: str
    cache_bytes: int
    config: str | None


@dataclass(frozen=True)
class TaskResult:
    """What one case's task returns: its file name, the seconds (None when it failed), its summary or
    error line and its (key, warning) pairs."""

    file_name: str
    seconds: float | None
    line: str
    warnings: tuple[tuple[str, str], ...] = ()


# (settings, thread id) -> (routing table, pool): one pool per worker thread, built on its first case.
# A predictor is not shared by two threads; with `dask worker --nthreads 1` that is one pool per process.
_POOLS: dict[tuple[Settings, int], tuple[RoutingTable, ModelPool]] = {}
_POOLS_LOCK = threading.Lock()


def _worker_threads(settings: Settings) -> int:
    if settings.threads:
        return settings.threads
    from distributed import get_worker

    from models.hardware import cpu_budget

    try:
        concurrent = get_worker().state.nthreads
    except ValueError:  # not inside a Dask worker (called directly)
        concurrent = 1
    return max(1, cpu_budget() // max(1, concurrent))


def worker_pool(settings: Settings) -> tuple[RoutingTable, ModelPool]:
    """This worker thread's routing table and ModelPool, made on first use and kept for later cases."""
    key = (settings, threading.get_ident())
    with _POOLS_LOCK:
        if key not in _POOLS:
            table = RoutingTable.load(Path(settings.config) if settings.config else None)
            models = Path(settings.models) if settings.models else None
            _POOLS[key] = table, ModelPool(models, _worker_threads(settings), settings.precision,
                                           settings.cache_bytes)
        return _POOLS[key]


def segment_task(path: str, output: str, settings: Settings) -> TaskResult:
    """One case on a worker: segment_file with the worker's pool; errors become the result's line."""
    name = Path(path).name
    found: list[tuple[str, str]] = []
    try:
        table, pool = worker_pool(settings)
        result = segment_file(Path(path), table, pool, Path(output),
                              on_route=lambda case, route: found.extend(route_warnings(case, route)))
    except Exception as error:  # one broken case must not stop the others
        return TaskResult(name, None, error_line(name, error), tuple(found))
    return TaskResult(name, result.seconds, summary_line(result), tuple(found))


def run_on_dask(
    address: str, cases: list[Path], output: Path, settings: Settings, timings: EfficiencyLog | None = None,
    progress: bool = True,
) -> int:
    """Segment `cases` into `output` on the Dask cluster at `address` (or a scheduler file's path);
    log the same lines as a local run and return its exit status (1 if any case failed). `timings`: the
    run's efficiency file, with any rows it carries (default: a new OUTPUT/efficiency.csv)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        log.error("error: --scheduler needs Dask: pip install -r requirements-dev.txt (dask, distributed)")
        return 1
    output = output.resolve()
    timings = timings if timings is not None else EfficiencyLog(output / "efficiency.csv")
    carried = len(timings)
    # largest first: a big volume started last would leave the other workers idle at the end
    ordered = sorted(cases, key=lambda p: (-p.stat().st_size, p.name))
    token = f"{time.time_ns():x}"
    connect = {"scheduler_file": address} if Path(address).is_file() else {"address": address}
    failed, warned = 0, set()
    try:
        client = Client(**connect, timeout="30s")
    except (OSError, TimeoutError) as error:  # no scheduler there (dask's connect timeout is an OSError)
        log.error("error: cannot reach the Dask scheduler at %s: %s", address, error)
        return 1
    with client:
        futures = [
            client.submit(segment_task, str(path.resolve()), str(output / path.name), settings,
                          key=f"segment-{path.name}-{token}", pure=False, priority=len(ordered) - rank)
            for rank, path in enumerate(ordered)
        ]
        bar = tqdm(total=len(futures), desc="cases", unit="case", disable=None if progress else True)
        for future in as_completed(futures):
            name = future.key.removeprefix("segment-").removesuffix(f"-{token}")
            try:
                result = future.result()
            except Exception as error:  # the task itself was lost: KilledWorker after repeated worker deaths
                result = TaskResult(name, None, error_line(name, error))
            bar.update()
            for key, warning in result.warnings:
                if key not in warned:
                    warned.add(key)
                    log.warning("%s", warning)
            if result.seconds is None:
                failed += 1
                log.error("%s", result.line)
                continue
            log.info("%s", result.line)
            timings.record(Path(result.file_name).stem, result.seconds)
        bar.close()
    for path in cases:  # temp files of workers that died mid-write (their cases were redone elsewhere)
        remove_stale_temps(output / path.name)
    log.info("%s", done_line(len(timings) - carried, failed))
    return 1 if failed else 0
