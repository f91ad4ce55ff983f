"""run.json beside a run's outputs: what made them, as nnU-Net keeps its plans beside its predictions.

The project's version (and git commit in a checkout), OpenVINO's version, the CPU and the precision each
model runs in (`auto`'s choice), the routing table (its text and hash), the IR files' hashes, the run's
arguments and, per case, its route (model, strategy and every parameter value it ran with) and precision.
With `--scheduler` those top-level CPU and precision facts are the client's (the machine running predict.py):
each case then also records the Dask worker that ran it, as that worker reported itself (its host, its CPU's name
and class as models.hardware names them, and the OpenVINO threads its models run on), its precision is the one
that worker resolved, and `workers` lists each distinct (worker, host, CPU, threads) with the precision of each
model it ran and the cases it ran.
Rewritten whole (atomically) after every case, like efficiency.csv, so a run stopped anywhere leaves a whole
file; `--continue-prediction` keeps the cases of the earlier file that it skips, and each `--num-parts` part
writes its own run.<K>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import openvino as ov

from models.hardware import cpu_name, this_cpu_class_name
from models.pool import ModelPool
from models.registry import get_spec
from router.caserows import CaseRows
from router.parts import part_file_name
from router.routing import DEFAULT_ROUTES, Route

ROOT = Path(__file__).resolve().parents[1]


def record_name(num_parts: int, part_id: int) -> str:
    """run.json for a whole run; run.<K>.json for part K."""
    return part_file_name("run.json", num_parts, part_id)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def project_version() -> dict[str, str]:
    """{"version": the installed seg package's, "commit": HEAD of the checkout, when there is one}. The Docker
    image installs no package and holds no checkout: its build records both in $SEG_VERSION and $SEG_COMMIT
    (docker/build_image.sh). "unknown" where nothing tells."""
    try:
        version = metadata.version("seg")
    except metadata.PackageNotFoundError:
        version = os.environ.get("SEG_VERSION") or "unknown"
    found = {"version": version}
    if commit := os.environ.get("SEG_COMMIT"):
        found["commit"] = commit
    elif (ROOT / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
            found["commit"] = head
        except (OSError, subprocess.SubprocessError):
            pass
    return found


def run_facts(pool: ModelPool, config: Path | None, arguments: dict[str, Any]) -> dict[str, Any]:
    """Everything of run.json but the cases: for the models `pool` may run, their precision and the hashes of
    the IR files that precision loads (the INT8 encoder only where it runs: hashing is start-up time)."""
    routes = Path(config) if config else DEFAULT_ROUTES
    text = routes.read_text()
    models = sorted(pool.available)
    precision = {name: pool.resolve_precision(name) for name in models}
    files = {}
    for name in models:
        spec = get_spec(name)
        encoder = spec.encoder_int8_file if precision[name] == "int8" else spec.encoder_file
        for file_name in (encoder, spec.decoder_file):
            for part in (pool.directory / file_name, (pool.directory / file_name).with_suffix(".bin")):
                if part.is_file():
                    files[part.name] = _sha256(part)
    return {
        "seg": project_version(),
        "openvino": ov.get_version(),
        "cpu": cpu_name(),
        "cpu_class": this_cpu_class_name(),
        "precision": precision,
        "routing_table": {"source": str(routes), "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text},
        "models": files,
        "arguments": arguments,
    }


@dataclass(frozen=True)
class WorkerFacts:
    """Where a case ran on a cluster, as the Dask worker says of itself: its name, its host, its CPU's name and
    class as run_facts records a local run's (models.hardware), and the OpenVINO threads its models were
    compiled on (router.distributed resolves them per worker; None: OpenVINO's default, every core)."""

    worker: str
    host: str
    cpu: str
    cpu_class: str
    threads: int | None

    @classmethod
    def here(cls, worker: str, threads: int | None) -> WorkerFacts:
        """This process's facts, for the worker named `worker` whose models run on `threads`."""
        return cls(worker, socket.gethostname(), cpu_name(), this_cpu_class_name(), threads)


WORKER_KEYS = tuple(field.name for field in fields(WorkerFacts))


def worker_summary(cases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct WorkerFacts of the case entries that name a worker, with the precision of each model it ran
    (the entries' "model" -> "precision") and the stems of the cases it ran (sorted): a list of
    {"worker", "host", "cpu", "cpu_class", "threads", "precision": {model: precision}, "cases": [stem, ...]},
    sorted by worker. A key an entry lacks (one kept from an earlier version's run.json) is None."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for stem, entry in sorted(cases.items()):
        if "worker" not in entry:
            continue
        key = tuple(entry.get(name) for name in WORKER_KEYS)
        row = found.setdefault(key, {**dict(zip(WORKER_KEYS, key, strict=True)), "precision": {}, "cases": []})
        row["precision"][entry.get("model", "")] = entry.get("precision", "")
        row["cases"].append(stem)
    # as strings: threads may be None (an earlier version's entry) beside an int, which do not compare
    return [found[key] for key in sorted(found, key=lambda key: [str(value) for value in key])]


class RunRecord(CaseRows[dict[str, Any]]):
    """The run.json at `path` (router.caserows.CaseRows): `facts` (run_facts) and per case its route and
    precision (`entry`), with the worker that ran it on a cluster (then also `workers`: worker_summary); an
    empty entry for a case skipped as done that the earlier file did not hold."""

    missing: dict[str, Any] = {}

    def __init__(self, path: Path, facts: dict[str, Any], resume: bool = False) -> None:
        self.facts = facts
        super().__init__(path, resume)

    @staticmethod
    def entry(route: Route, precision: str, worker: WorkerFacts | None = None) -> dict[str, Any]:
        """A case's row: the route it took (as its line says it, then the model that ran, the strategy and every
        value of the strategy's parameters, the routing table's merged over their defaults), the precision its
        model ran in and, for a case a Dask worker ran, that worker's facts (WorkerFacts)."""
        row = {"route": route.describe(), "precision": precision, "model": route.model, "strategy": route.strategy,
               "params": asdict(route.params)}
        return {**row, **asdict(worker)} if worker is not None else row

    def read_earlier(self) -> dict[str, dict[str, Any]]:
        try:
            cases = json.loads(self.path.read_text()).get("cases", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return cases if isinstance(cases, dict) else {}

    def render(self) -> str:
        workers = worker_summary(self.rows)
        return json.dumps({**self.facts, **({"workers": workers} if workers else {}), "cases": self.rows},
                          indent=1) + "\n"
