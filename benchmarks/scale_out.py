"""Scale-out benchmark: cases per minute on a Dask cluster of 1 and 2 worker processes (1 thread each)
against one local process with 2 threads, the scheduler's overhead per case, and what N machines would
do for the 3,278-case validation set (from the measured per-case times).

    python -m benchmarks.scale_out [--inputs demo/inputs] [--copies 4] [--workers 1 2]

Everything runs on this machine with real processes: `dask scheduler` and `dask worker` are started
here (local_cluster, which tests/test_scale_out.py uses too) and torn down at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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


def make_cases(folder: Path, count_2d: int = 6, count_3d: int = 6, seed: int = 0) -> list[Path]:
    """Seeded synthetic cases: `count_2d` (256, 256, 3) images with 3 boxes and `count_3d` CT/MR volumes
    of 8-13 slices at 128 px with one box over 4-9 slices (sizes differ: largest-first has work to do)."""
    import numpy as np

    from models.boxes import boxes_from_labels
    from sample_data.synthetic import blob_volume

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count_2d):
        image = rng.integers(0, 60, (256, 256, 3), dtype=np.uint8)
        boxes = []
        for x, y in ((30, 40), (120, 60), (70, 150)):
            side = int(rng.integers(30, 60))
            image[y:y + side, x:x + side] = 200
            boxes.append([x, y, x + side - 1, y + side - 1])
        paths.append(folder / f"2DBox_Endoscopy_bench{index:02d}.npz")
        np.savez(paths[-1], imgs=image, boxes=np.array(boxes))
    for index in range(count_3d):
        depth = 8 + index % 6
        volume, mask = blob_volume((depth, 128, 128), (depth / 2, 64, 60), (depth / 2 - 1.5, 30, 24), seed=index)
        paths.append(folder / f"3DBox_{('CT', 'MR')[index % 2]}_bench{index:02d}.npz")
        np.savez(paths[-1], imgs=volume, boxes=boxes_from_labels(mask.astype(np.uint8)),
                 spacing=np.array([1.0, 1.0, 2.5]))
    return paths


def copy_cases(source: Path, folder: Path, copies: int) -> list[Path]:
    """`copies` copies of every .npz case in `source` (a suffix per copy keeps the names apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted(source.glob("*.npz")):
        for copy in range(copies):
            paths.append(folder / f"{path.stem}_copy{copy}.npz")
            shutil.copyfile(path, paths[-1])
    return paths


def _timed_run(argv: list[str]) -> tuple[float, int, list[float]]:
    """predict.main(argv) -> (wall seconds, exit status, the per-case seconds of efficiency.csv)."""
    import predict

    output = Path(argv[argv.index("-o") + 1])
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the per-case lines; the figures are what matter here
        status = predict.main(argv)
    wall = time.perf_counter() - start
    rows = (output / "efficiency.csv").read_text().splitlines()[1:]
    return wall, status, [float(row.split(",")[1]) for row in rows]


def _noop() -> None:
    return None


def task_round_trip(scheduler_file: Path, tasks: int = 200) -> float:
    """Seconds per task of `tasks` empty tasks on the cluster: the scheduler's own cost per case."""
    from distributed import Client, wait

    with Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
        wait(client.submit(_noop, pure=False))  # connection and function shipping are not per case
        start = time.perf_counter()
        wait([client.submit(_noop, pure=False, key=f"noop-{i}") for i in range(tasks)])
        return (time.perf_counter() - start) / tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=Path, default=None,
                        help="cases to use (copied --copies times); default: 12 seeded synthetic cases")
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts to measure")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    rows: list[tuple[str, int, float, float, float]] = []  # (setup, cases, wall, cases/min, mean case s)
    with tempfile.TemporaryDirectory(prefix="scale_out_") as scratch:
        root = Path(scratch)
        cases = copy_cases(args.inputs, root / "in", args.copies) if args.inputs else make_cases(root / "in")
        count = len(cases)
        wall, status, seconds = _timed_run(["-i", str(root / "in"), "-o", str(root / "local"), "--threads", "2",
                                            "--no-progress"])
        rows.append(("1 process, 2 threads", count, wall, 60 * count / wall, sum(seconds) / len(seconds)))
        overhead, round_trip = None, None
        for workers in args.workers:
            with local_cluster(workers, root / f"dask{workers}") as cluster:
                wall, status, seconds = _timed_run(
                    ["-i", str(root / "in"), "-o", str(root / f"dask{workers}-out"), "--threads", "1",
                     "--no-progress", "--scheduler", str(cluster.scheduler_file)])
                if status:
                    print(f"error: the Dask run with {workers} worker(s) failed", file=sys.stderr)
                    return 1
                rows.append((f"Dask, {workers} worker(s) x 1 thread", count, wall, 60 * count / wall,
                             sum(seconds) / len(seconds)))
                if workers == 1:  # one worker runs the cases one after another: the rest of the wall is overhead
                    overhead = (wall - sum(seconds)) / count
                    round_trip = task_round_trip(cluster.scheduler_file)
    load_after = os.getloadavg()

    print(f"{count} cases; load average (1, 5, 15 min) before {load_before}, after "
          f"{tuple(round(x, 2) for x in load_after)} on {os.cpu_count()} CPUs")
    print(f"{'setup':<32} {'wall s':>8} {'cases/min':>10} {'mean s/case':>12}")
    for setup, _, wall, per_minute, mean in rows:
        print(f"{setup:<32} {wall:8.1f} {per_minute:10.1f} {mean:12.2f}")
    if overhead is not None and round_trip is not None:
        print(f"scheduler overhead per case: {overhead * 1000:.0f} ms (1-worker wall - sum of case seconds, / cases, "
              f"includes connecting and each worker importing the code); "
              f"{round_trip * 1000:.1f} ms per empty task")
    best = max(rows[1:], key=lambda row: row[3], default=rows[0])
    print(f"on paper, {VALIDATION_CASES} cases at {best[3]:.1f} cases/min per machine like this one "
          f"({best[0]}, mean {best[4]:.2f} s per case):")
    for machines in args.machines:
        minutes = VALIDATION_CASES / (best[3] * machines)
        print(f"  {machines:3d} machine(s): {minutes:8.1f} min")
    if round_trip is not None:
        print(f"  plus the scheduler's own time, serial whatever N: {VALIDATION_CASES} x {round_trip * 1000:.1f} ms "
              f"= {VALIDATION_CASES * round_trip:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
