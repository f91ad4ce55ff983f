"""Scale-out benchmark: cases per minute on a Dask cluster of 1 and 2 worker processes (1 thread each)
against one local process with 2 threads, the scheduler's overhead per case, and what N machines would
do for the 3,278-case validation set (from the measured per-case times).

    python -m benchmarks.scale_out [--inputs demo/inputs] [--copies 4] [--workers 1 2]

Everything runs on this machine with real processes: `dask scheduler` and `dask worker` are started
here (local_cluster, which tests/test_scale_out.py uses too) and torn down at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_CASES = 3278


@dataclass
class LocalCluster:
    """A `dask scheduler` and its `dask worker` processes on this machine (no nanny: killing a worker's
    process kills the worker, as a machine that goes away would)."""

    scheduler_file: Path
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)


def _dask(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_worker(cluster: LocalCluster, name: str, folder: Path, timeout: float = 60.0) -> None:
    """Start one worker process (1 Dask thread) named `name` and wait until the scheduler has it."""
    from distributed import Client

    cluster.workers[name] = _dask(
        "worker", "--scheduler-file", str(cluster.scheduler_file), "--nthreads", "1", "--nworkers", "1",
        "--no-nanny", "--name", name, "--no-dashboard", "--local-directory", str(folder / name),
        log=folder / f"worker-{name}.log")
    with Client(scheduler_file=str(cluster.scheduler_file), timeout="30s") as client:
        deadline = time.monotonic() + timeout
        while name not in {w["name"] for w in client.scheduler_info()["workers"].values()}:
            if time.monotonic() > deadline or cluster.workers[name].poll() is not None:
                raise RuntimeError(f"dask worker {name} did not start: see {folder / f'worker-{name}.log'}")
            time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def local_cluster(workers: int, folder: Path, timeout: float = 60.0) -> Iterator[LocalCluster]:
    """A scheduler on 127.0.0.1 (a free port, its address in `folder`/scheduler.json) and `workers`
    worker processes named w0, w1, ...; all stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    cluster = LocalCluster(scheduler_file, _dask(
        "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
        "--scheduler-file", str(scheduler_file), log=folder / "scheduler.log"))
    try:
        deadline = time.monotonic() + timeout
        while not _readable_json(scheduler_file):
            if time.monotonic() > deadline or cluster.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler did not start: see {folder / 'scheduler.log'}")
            time.sleep(0.1)
        for index in range(workers):
            start_worker(cluster, f"w{index}", folder, timeout)
        yield cluster
    finally:
        for process in cluster.workers.values():
            _stop(process)
        _stop(cluster.scheduler)
