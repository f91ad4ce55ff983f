"""run.json beside a run's outputs: what made them, as nnU-Net keeps its plans beside its predictions.

The project's version (and git commit in a checkout), OpenVINO's version, the CPU and the precision each
model runs in (`auto`'s choice), the routing table (its text and hash), the IR files' hashes, the run's
arguments and, per case, its route and precision. Rewritten whole (atomically) after every case, like
efficiency.csv, so a run stopped anywhere leaves a whole file; `--continue-prediction` keeps the cases of
the earlier file that it skips, and each `--num-parts` part writes its own run.<K>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import openvino as ov

from models.hardware import shared_core, this_cpu_class_name
from models.pool import ModelPool
from models.registry import get_spec
from router.casefile import remove_stale_temps, write_text_atomic
from router.parts import part_file_name
from router.routing import DEFAULT_ROUTES

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
        "cpu": str(shared_core().get_property("CPU", "FULL_DEVICE_NAME")),
        "cpu_class": this_cpu_class_name(),
        "precision": precision,
        "routing_table": {"source": str(routes), "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text},
        "models": files,
        "arguments": arguments,
    }


class RunRecord:
    """The run.json at `path`: `facts` (run_facts) and one entry per case, rewritten after every case.
    `resume`: the entries of the file already there are kept for the cases the run skips as done."""

    def __init__(self, path: Path, facts: dict[str, Any], resume: bool = False) -> None:
        self.path = Path(path)
        remove_stale_temps(self.path)  # a kill during a write leaves its temp file: never worth keeping
        self.facts = facts
        self.earlier: dict[str, Any] = {}
        if resume:
            try:
                cases = json.loads(self.path.read_text()).get("cases", {})
                self.earlier = cases if isinstance(cases, dict) else {}
            except (OSError, ValueError, AttributeError):
                self.earlier = {}
        self.cases: dict[str, Any] = {}

    def keep_earlier(self, stem: str) -> None:
        """Carry the earlier run's entry of a case this run skips (an empty one where it has none)."""
        self.cases[stem] = self.earlier.get(stem, {})

    def record(self, stem: str, route: str, precision: str) -> None:
        """Add (or replace) a case's entry and rewrite the file."""
        self.cases[stem] = {"route": route, "precision": precision}
        self.write()

    def write(self) -> None:
        """Write the facts and every case's entry now."""
        write_text_atomic(self.path, json.dumps({**self.facts, "cases": self.cases}, indent=1) + "\n")
