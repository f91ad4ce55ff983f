"""Challenge timing protocol for a submission image, with the docker Python SDK.

For each `.npz` case of INPUTS (sorted), alone: copy it into an empty input folder, run the image
(as the challenge does: `-m 8G`, inputs/outputs bind-mounted on /workspace, here also
`--network none`), time the whole container run from create to removal (start-up included), record
the exit status and peak memory, move the case's segmentation into OUTDIR, then empty both folders.
A case that fails, runs out of memory or times out is recorded and the run goes on.

    python evaluation/time_eval.py -i INPUTS -o OUTDIR --image seg:latest [--repeat 3] [--cpus 2]

Writes OUTDIR/running_time.csv with columns
    case, runtime (mean seconds over --repeat runs), std, exit_code, peak_mem_mb, status
and each run's container log under OUTDIR/logs/ (<case>.log, or <case>.<k>.log for run k of several).
Status is one of ok, failed (non-zero exit), no_output (exit 0 without the output file), timeout,
oom, error (Docker refused to run it).
Peak memory is the container cgroup's high-water mark (memory.max_usage_in_bytes on cgroup v1,
memory.peak on v2; page cache included, as the -m limit counts it), else the highest
`docker stats` sample. Exit status 0 if every case is ok, else 1.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import requests

import docker

CHALLENGE_COMMAND = ["/bin/bash", "-c", "sh predict.sh"]
CSV_COLUMNS = ["case", "runtime", "std", "exit_code", "peak_mem_mb", "status"]
# Worst first: the status a case gets when its repeats differ.
STATUS_ORDER = ["error", "timeout", "oom", "failed", "no_output", "ok"]


@dataclass
class RunResult:
    """One container run of one case."""

    seconds: float
    exit_code: int
    status: str
    peak_bytes: int | None
    log: str = ""


@dataclass
class CaseTimings:
    """All repeats of one case, summarised as one CSV row."""

    case: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        return min((run.status for run in self.runs), key=STATUS_ORDER.index)

    def row(self) -> dict[str, Any]:
        times = [run.seconds for run in self.runs]
        peaks = [run.peak_bytes for run in self.runs if run.peak_bytes is not None]
        worst = next(run for run in self.runs if run.status == self.status)
        return {
            "case": self.case,
            "runtime": f"{statistics.fmean(times):.3f}",
            "std": f"{statistics.pstdev(times):.3f}" if len(times) > 1 else "0.000",
            "exit_code": worst.exit_code,
            "peak_mem_mb": f"{max(peaks) / 2**20:.1f}" if peaks else "",
            "status": self.status,
        }


class PeakMemory:
    """Follow a running container's memory high-water mark in a background thread.

    Reads the container's own cgroup file (exact peak) when the daemon shares this host's /proc and
    /sys; else samples `docker stats` (about once a second)."""

    def __init__(self, container: Any, interval: float = 0.05) -> None:
        self.container = container
        self.interval = interval
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _note(self, value: int | None) -> None:
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value

    def _follow(self) -> None:
        path = self._cgroup_peak_file()
        if path is None:
            self._follow_stats()
            return
        while not self._stop.is_set():
            try:
                self._note(int(path.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                break  # the cgroup is gone: the container exited
            time.sleep(self.interval)

    def _cgroup_peak_file(self) -> Path | None:
        try:
            self.container.reload()
            pid = int(self.container.attrs["State"]["Pid"])
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except (OSError, KeyError, ValueError, docker.errors.APIError):
            return None
        for line in lines:
            _, controllers, rel = line.split(":", 2)
            if "memory" in controllers.split(","):  # cgroup v1
                candidate = Path("/sys/fs/cgroup/memory") / rel.lstrip("/") / "memory.max_usage_in_bytes"
                return candidate if candidate.exists() else None
        for line in lines:
            if line.startswith("0::"):  # cgroup v2
                candidate = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.peak"
                return candidate if candidate.exists() else None
        return None

    def _follow_stats(self) -> None:
        try:
            for stats in self.container.stats(stream=True, decode=True):
                memory = stats.get("memory_stats") or {}
                self._note(memory.get("max_usage") or memory.get("usage"))
                if self._stop.is_set():
                    break
        except (docker.errors.APIError, requests.exceptions.RequestException, ValueError):
            pass


def empty_folder(folder: Path) -> None:
    """Remove everything inside `folder` (the folder itself stays)."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_once(
    client: docker.DockerClient,
    args: argparse.Namespace,
    command: list[str] | None,
    inputs: Path,
    outputs: Path,
    name: str,
) -> RunResult:
    """Create, start, wait for and remove one container; time all of it."""
    volumes = {
        str(inputs): {"bind": "/workspace/inputs", "mode": "rw"},
        str(outputs): {"bind": "/workspace/outputs", "mode": "rw"},
    }
    options: dict[str, Any] = {"mem_limit": args.memory, "network_mode": "none", "volumes": volumes, "name": name}
    if args.cpus:
        options["nano_cpus"] = int(args.cpus * 1e9)
    if args.user:
        options["user"] = args.user
    start = time.perf_counter()
    try:
        container = client.containers.create(args.image, command=command, **options)
    except docker.errors.DockerException as error:
        return RunResult(time.perf_counter() - start, -1, "error", None, f"docker create: {error}\n")
    status, exit_code, log, paused = "ok", -1, "", 0.0
    memory = PeakMemory(container)
    try:
        container.start()
        with memory:
            try:
                exit_code = int(container.wait(timeout=args.timeout)["StatusCode"])
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                status = "timeout"
                try:
                    container.kill()
                except docker.errors.APIError:  # it exited just as the timeout fired: still a timeout
                    pass
                exit_code = int(container.wait(timeout=60)["StatusCode"])
        pause = time.perf_counter()  # the log fetch below is not part of the run
        container.reload()
        if status == "ok" and container.attrs["State"].get("OOMKilled"):
            status = "oom"
        elif status == "ok" and exit_code != 0:
            status = "failed"
        log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        paused = time.perf_counter() - pause
    except docker.errors.DockerException as error:
        status, log = "error", f"{log}docker: {error}\n"
    finally:
        try:
            container.remove(force=True)
        except docker.errors.DockerException:
            pass
    seconds = time.perf_counter() - start - paused
    return RunResult(seconds, exit_code, status, memory.peak, log)


def time_case(
    client: docker.DockerClient, args: argparse.Namespace, command: list[str] | None, case: Path, work: Path
) -> CaseTimings:
    """All repeats of one case; the last good output goes to the output folder."""
    inputs, outputs = work / "inputs", work / "outputs"
    result = CaseTimings(case.name)
    for repeat in range(args.repeat):
        empty_folder(inputs)
        empty_folder(outputs)
        shutil.copy2(case, inputs / case.name)
        name = f"time_eval_{os.getpid()}_{case.stem}_{repeat}"[:120]
        run = run_once(client, args, command, inputs, outputs, name)
        produced = outputs / case.name
        if run.status == "ok" and not produced.is_file():
            run.status = "no_output"
        if run.status == "ok":
            shutil.move(str(produced), args.output / case.name)
        result.runs.append(run)
        suffix = f".{repeat + 1}" if args.repeat > 1 else ""
        (args.output / "logs" / f"{case.stem}{suffix}.log").write_text(run.log)
        peak = f"{run.peak_bytes / 2**20:.0f} MB" if run.peak_bytes is not None else "n/a"
        print(
            f"{case.name} [{repeat + 1}/{args.repeat}] {run.seconds:.2f}s exit={run.exit_code} peak={peak} "
            f"{run.status}",
            file=sys.stderr,
        )
        if run.status != "ok":
            break  # no point timing a broken case again
    empty_folder(inputs)
    empty_folder(outputs)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-i", "--input", type=Path, required=True, help="folder of .npz cases")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for segs, logs and running_time.csv")
    parser.add_argument("--image", default="seg:latest", help="image to time (default seg:latest)")
    parser.add_argument("--memory", default="8g", help="container memory limit (docker -m; default 8g)")
    parser.add_argument("--cpus", type=float, default=None, help="CPU limit (docker --cpus; default none)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the CSV gives mean and std")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run is killed (default 600)")
    parser.add_argument("--user", default=None, help="run as UID:GID (docker --user; default the image's)")
    parser.add_argument(
        "--command",
        default=None,
        help='shell command run in the container (default: the challenge\'s `/bin/bash -c "sh predict.sh"`; '
        "'' for the image's own CMD)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the per-case input/output folders live")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.input.is_dir():
        print(f"error: input folder {args.input} does not exist", file=sys.stderr)
        return 2
    cases = sorted(p for p in args.input.iterdir() if p.is_file() and p.suffix == ".npz")
    if not cases:
        print(f"error: no .npz case in {args.input}", file=sys.stderr)
        return 2
    if args.command is None:
        command: list[str] | None = CHALLENGE_COMMAND
    elif args.command == "":
        command = None
    else:
        command = ["/bin/sh", "-c", args.command]
    try:
        client = docker.from_env()
        client.images.get(args.image)
    except docker.errors.ImageNotFound:
        print(f"error: image {args.image} not found (build it first)", file=sys.stderr)
        return 2
    except docker.errors.DockerException as error:
        print(f"error: no Docker daemon: {error}", file=sys.stderr)
        return 2
    args.output = args.output.resolve()
    (args.output / "logs").mkdir(parents=True, exist_ok=True)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="time_eval_", dir=args.workdir)).resolve()
    rows = []
    try:
        for folder in ("inputs", "outputs"):
            (work / folder).mkdir()
            (work / folder).chmod(0o777)  # the container may run as any --user
        for case in cases:
            rows.append(time_case(client, args, command, case, work).row())
            write_csv(args.output / "running_time.csv", rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bad = [row["case"] for row in rows if row["status"] != "ok"]
    total = sum(float(row["runtime"]) for row in rows)
    print(
        f"{len(rows)} case(s), {len(rows) - len(bad)} ok, {len(bad)} not ok{': ' + ', '.join(bad) if bad else ''}; "
        f"total {total:.1f}s -> {args.output / 'running_time.csv'}",
        file=sys.stderr,
    )
    return 1 if bad else 0


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the CSV atomically (rewritten after every case, so a crash keeps what was timed)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
