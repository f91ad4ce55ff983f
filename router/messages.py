"""The per-case lines every run prints (router/runner.py's loop, and a Dask worker's task): one format.

A local run and a distributed run of the same cases log the same lines and end with the same status.
"""

from __future__ import annotations

from router.casefile import Case, CaseError
from router.modality import UNKNOWN_PREFIX
from router.pipeline import CaseResult
from router.routing import Route


def summary_line(result: CaseResult) -> str:
    """One line for a segmented case: name, modality, dimension, boxes, route, precision, seconds."""
    case = result.case
    return (f"{case.name}  {case.modality}  {case.dim}D  boxes={len(case.boxes)}  route={result.route.describe()}  "
            f"{result.precision}  {result.seconds:.2f}s")


def error_line(file_name: str, error: BaseException) -> str:
    """One line for a failed case: the CaseError's reason, or the exception's type and message (a
    message of several lines, as some of Dask's are, is joined into one)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, CaseError):
        return f"error: {file_name}: {text}"
    return f"error: {file_name}: {type(error).__name__}: {text}"


def route_warnings(case: Case, route: Route) -> list[tuple[str, str]]:
    """(key, warning) pairs a run prints once per key: a model that fell back, an unknown modality."""
    found = []
    if route.fallback_from:
        found.append((route.fallback_from,
                      f"WARNING: {route.note} for {case.modality} cases: its weights were not built in"))
    if case.modality.startswith(UNKNOWN_PREFIX):
        found.append((case.modality, f"WARNING: {case.name}.npz: modality "
                      f"'{case.modality.removeprefix(UNKNOWN_PREFIX)}' is not in the routing table; "
                      "it takes the default route"))
    return found


def done_line(written: int, failed: int) -> str:
    """The run's last line."""
    return f"done: {written} case(s) written, {failed} failed"
