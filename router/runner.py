"""The run over a folder's cases: one loop, two back-ends (this process, or a Dask cluster).

`run_cases` is the loop every run takes (predict.py calls it once its arguments are checked): skip
what `--continue-prediction` finds done, hand the rest to a back-end, log one line per case and each
warning once, keep `efficiency.csv` whole after every case and end with the run's status. A back-end
only segments: `LocalBackend` here, case after case, and `router.distributed.DaskBackend`, one task
per case on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from router.casefile import Case, remove_stale_temps
from router.caserows import CaseRows
from router.efficiency import EfficiencyLog
from router.interrupt import Interrupted, stop_on_signals
from router.messages import done_line, error_line, route_warnings, summary_line
from router.parts import select_part
from router.pipeline import Segmenter, is_done
from router.progress import tqdm  # tqdm itself only on a terminal
from router.provenance import RunRecord, WorkerFacts
from router.routing import Route
from router.strategies import OnSlice

log = logging.getLogger("seg")

# warn(key, warning): log `warning` unless one with the same key was logged earlier in the run
Warn = Callable[[str, str], None]


@dataclass(frozen=True)
class CaseOutcome:
    """What a back-end reports for one case: its file name, the seconds (None when it failed), its summary
    or error line, the (key, warning) pairs it has not reported through `warn` (a Dask task's), the
    route and precision it ran with (None and empty when it failed) and, from a Dask task, the worker that
    ran it (router.provenance.WorkerFacts: its name, host, CPU and threads)."""

    file_name: str
    seconds: float | None
    line: str
    warnings: tuple[tuple[str, str], ...] = ()
    route: Route | None = None
    precision: str = ""
    worker: WorkerFacts | None = None


class RunError(Exception):
    """A run that cannot start (no Dask, no scheduler there): the message is its one error line."""


class Backend(Protocol):
    """Where the cases are segmented."""

    # True: every case is handed over at once (so what is left is known first); False: one at a time
    submits_all: bool

    def session(self) -> AbstractContextManager[None]:
        """The context the run's loop runs in; raises RunError when the back-end cannot start."""

    def outcomes(self, cases: Iterable[Path], output: Path, warn: Warn) -> Iterator[CaseOutcome]:
        """Segment `cases` into the folder `output`, one CaseOutcome per case as it ends (any order)."""


class LocalBackend:
    """The cases one after another in this process, with one ModelPool; SIGTERM/SIGINT stop the run
    (router.interrupt) and abandon the current case, whose output is then not written."""

    submits_all = False

    def __init__(self, segmenter: Segmenter, progress: bool = True) -> None:
        self.segmenter, self.progress = segmenter, progress

    def session(self) -> AbstractContextManager[None]:
        return stop_on_signals()

    @contextlib.contextmanager
    def _slice_bar(self, case: Case, route: Route, slices: int) -> Iterator[OnSlice]:
        hide = not self.progress or not slices
        with tqdm(total=slices, desc=case.name, unit="slice", leave=False, disable=True if hide else None) as bar:
            yield bar.update

    def outcomes(self, cases: Iterable[Path], output: Path, warn: Warn) -> Iterator[CaseOutcome]:
        def on_route(case: Case, route: Route) -> None:
            for key, warning in route_warnings(case, route):
                warn(key, warning)

        for path in cases:
            try:
                result = self.segmenter.segment_file(path, output / path.name, on_route=on_route,
                                                     progress=self._slice_bar)
            except Exception as error:  # one broken case must not stop the others
                yield CaseOutcome(path.name, None, error_line(path.name, error))
                continue
            yield CaseOutcome(path.name, result.seconds, summary_line(result), (), result.route, result.precision)


def list_cases(folder: Path, num_parts: int = 1, part_id: int = 0) -> list[Path]:
    """The `.npz` case files of `folder` (hidden files ignored, any other file skipped with a warning),
    sorted by name; with `num_parts`, part `part_id` of them (router.parts)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    cases = [p for p in files if p.suffix.lower() == ".npz"]
    for other in sorted(set(files) - set(cases)):
        log.warning("skip %s: not an .npz case file", other.name)
    return select_part(cases, num_parts, part_id)


def stopped_line(stop: Interrupted, current: Path | None, timings: EfficiencyLog, total: int) -> str:
    """The last line of a run a signal stopped: where (`current`: the case it was at), and how many done."""
    if current is None:
        where = "before the first case"
    else:
        where = f"after {current.name}" if current.stem in timings else f"at {current.name} (abandoned, not written)"
    return (f"stopped by {stop.name} {where}: {len(timings)} of {total} case(s) done; rerun with "
            "--continue-prediction to finish")


def run_cases(
    cases: list[Path], output: Path, backend: Backend, timings: EfficiencyLog, record: RunRecord,
    resume: bool = False, progress: bool = True,
) -> int:
    """Segment `cases` into `output` on `backend`; return the exit status: 0, 1 if a case failed (or the
    back-end could not start), 128 + the signal when one stopped the run.

    timings: the run's efficiency file (with `resume`, the rows of the cases found done are carried).
    record: the run's run.json (router.provenance), kept like `timings` (both router.caserows.CaseRows).
    resume: skip the cases whose output is already whole (`--continue-prediction`), checked just before
    each case locally and all at once before a back-end that takes every case at once.
    """
    warned: set[str] = set()
    kept: tuple[CaseRows, ...] = (timings, record)
    skipped = 0
    current: Path | None = None  # the case being looked at or segmented, for the stop message

    def warn(key: str, warning: str) -> None:
        if key not in warned:
            warned.add(key)
            log.warning("%s", warning)

    def to_segment() -> Iterator[Path]:
        nonlocal skipped, current
        for path in cases:
            current = path
            if resume:
                if is_done(path, output / path.name):
                    skipped += 1
                    for rows in kept:
                        rows.keep_earlier(path.stem)
                    bar.update()
                    continue
                remove_stale_temps(output / path.name)  # an earlier run's, killed mid-write
            yield path

    todo: Iterable[Path] = to_segment()
    # disable=None: tqdm draws bars on a terminal only, so docker logs and CI hold just the summary lines
    bar = tqdm(total=len(cases), desc="cases", unit="case", disable=None if progress else True)
    if backend.submits_all:
        todo = list(todo)
        bar.reset(total=len(todo))  # the bar counts the cases handed over
        if skipped:
            log.info("%d case(s) already done; %d to segment", skipped, len(todo))
    failed = 0
    try:
        with bar, backend.session():
            try:
                for outcome in backend.outcomes(todo, output, warn):
                    bar.update()
                    for key, warning in outcome.warnings:
                        warn(key, warning)
                    if outcome.seconds is None or outcome.route is None:
                        failed += 1
                        log.error("%s", outcome.line)
                        continue
                    stem = Path(outcome.file_name).stem
                    timings.record(stem, outcome.seconds)
                    record.record(stem, RunRecord.entry(outcome.route, outcome.precision, outcome.worker))
                    log.info("%s", outcome.line)
            except Interrupted as stop:  # within the session: a second signal is ignored while this is said
                for rows in kept:
                    rows.write()
                log.error("%s", stopped_line(stop, current, timings, len(cases)))
                return 128 + stop.signum
    except RunError as error:
        log.error("%s", error)
        return 1
    record.write()  # also when every case was skipped as done, or there was none
    # a back-end that took every case at once said what was already done before it started
    resumed = f", {skipped} already done" if skipped and not backend.submits_all else ""
    log.info("%s%s", done_line(len(timings) - skipped, failed), resumed)
    return 1 if failed else 0
