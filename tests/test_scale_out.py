"""Past one machine: the static split (--num-parts/--part-id) and cases as tasks on a real Dask cluster
(a `dask scheduler` and two `dask worker` processes on localhost, started here), against local runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import predict
from router.parts import split_parts
from tests.helpers import ROOT, blob_volume, tight_box3d, write_case

pytest.importorskip("distributed")
from benchmarks.scale_out import local_cluster  # noqa: E402  (needs distributed)

BAD = "2DBox_CT_broken.npz"


def _cases(folder: Path) -> list[str]:
    """Five small good cases (2D and 3D, sizes differ) and one truncated file; return the good names."""
    rng = np.random.default_rng(14)
    names = []
    for index, (depth, size) in enumerate([(7, 80), (6, 64)]):
        volume, mask = blob_volume(shape=(depth, size, size), centre=(depth // 2, size // 2, size // 2),
                                   radii=(1.5, size // 5, size // 6), seed=index)
        name = f"3DBox_{('CT', 'MR')[index]}_v{index}.npz"
        write_case(folder / name, imgs=volume, boxes=tight_box3d(mask)[None], spacing=np.array([1.0, 1.0, 2.0]))
        names.append(name)
    for index in range(3):
        image = rng.integers(0, 60, (64, 80 - 8 * index, 3), dtype=np.uint8)
        image[20:40, 30:60] = 220
        name = f"2DBox_Endoscopy_i{index}.npz"
        write_case(folder / name, imgs=image, boxes=np.array([[28, 18, 61, 41]]))
        names.append(name)
    (folder / BAD).write_bytes(b"PK\x03\x04 not a whole zip")
    return sorted(names)


def _case_lines(err: str) -> list[str]:
    """The per-case lines of a run's stderr without their seconds (they differ run to run), sorted."""
    lines = [line for line in err.splitlines() if re.match(r"(2DBox_|3DBox_|error: |WARNING: )", line)]
    return sorted(re.sub(r"  [0-9.]+s$", "", line) for line in lines)


def _segs(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    found = {}
    for name in names:
        with np.load(folder / name) as npz:
            found[name] = npz["segs"]
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ir_dir):
    """Inputs, and the single-process runs (1 thread) of parts 0 and 1 of 2 into one output folder."""
    root = tmp_path_factory.mktemp("scale_out")
    inputs, outputs = root / "in", root / "local"
    good = _cases(inputs)
    runs = []
    for part in (0, 1):
        done = subprocess.run([sys.executable, "predict.py", "-i", str(inputs), "-o", str(outputs), "--threads", "1",
                               "--no-progress", "--num-parts", "2", "--part-id", str(part)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        runs.append(done)
    return inputs, outputs, good, runs


def _pin_to_one_cpu(pid: int) -> None:
    """Let every thread of process `pid` use one CPU only (the threads it starts later inherit it), as
    `taskset -a` would: its models.hardware.cpu_budget is then 1."""
    cpu = min(os.sched_getaffinity(pid))
    for _ in range(2):  # a thread started during the first pass is caught by the second
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.name), {cpu})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ir_dir):
    """w0 and w1, 1 Dask thread each; w1 may use one CPU only, so a run without --threads resolves other threads
    on it than on w0 and this (the client's) process, which may use every CPU (on a machine with more than one)."""
    with local_cluster(2, tmp_path_factory.mktemp("dask")) as running:
        _pin_to_one_cpu(running.workers["w1"].pid)
        yield running


def test_parts_cover_the_folder_once_balanced_by_size(tmp_path) -> None:
    sizes = [9000, 8000, 7000, 6000, 50, 40, 30, 20, 10, 5]
    paths = []
    for index, size in enumerate(sizes):
        paths.append(tmp_path / f"case{index}.npz")
        paths[-1].write_bytes(b"x" * size)
    for num_parts in range(1, 6):
        parts = split_parts(paths, num_parts)
        flat = [p for part in parts for p in part]
        assert sorted(flat) == sorted(paths) and len(flat) == len(set(flat)), num_parts
        assert split_parts(paths[::-1], num_parts) == parts, "the split must not depend on listing order"
    # by size, not by count: each of 2 parts gets 2 of the 4 big files (a count split gives one part all 4)
    for part in split_parts(paths, 2):
        assert sum(p.stat().st_size > 1000 for p in part) == 2
    with pytest.raises(ValueError):
        split_parts(paths, 0)


def test_num_parts_runs_cover_the_folder_once(reference) -> None:
    inputs, outputs, good, runs = reference
    assert [run.returncode for run in runs].count(1) == 1, "exactly one part holds the bad case"
    assert sorted(p.name for p in outputs.glob("*.npz")) == good
    rows = [line.split(",")[0] for k in (0, 1)
            for line in (outputs / f"efficiency.{k}.csv").read_text().splitlines()[1:]]
    assert sorted(rows) == sorted(Path(name).stem for name in good), "each case in exactly one part's efficiency file"
    assert not (outputs / "efficiency.csv").exists()
    recorded = [stem for k in (0, 1) for stem in json.loads((outputs / f"run.{k}.json").read_text())["cases"]]
    assert sorted(recorded) == sorted(Path(name).stem for name in good), "each case in one part's run.K.json"
    assert not (outputs / "run.json").exists()
    out_of_range = predict.main(["-i", str(inputs), "-o", str(outputs), "--num-parts", "2", "--part-id", "2"])
    assert out_of_range == 1


def test_dask_run_equals_local_run(reference, cluster, tmp_path, capsys) -> None:
    """Same outputs, same per-case lines (the bad case's error included) and exit status 1."""
    inputs, local, good, runs = reference
    # what a worker killed while writing leaves behind (write_segs' temp file): removed at the end
    (tmp_path / f".{good[0]}.k1ll3d.tmp").write_bytes(b"half")
    status = predict.main(["-i", str(inputs), "-o", str(tmp_path), "--threads", "1", "--no-progress",
                           "--scheduler", str(cluster.scheduler_file)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert _case_lines(err) == _case_lines(runs[0].stderr + runs[1].stderr)
    assert f"error: {BAD}: " in err and "done: 5 case(s) written, 1 failed" in err
    expected, got = _segs(local, good), _segs(tmp_path, good)
    for name in good:
        assert np.array_equal(got[name], expected[name]), name
    assert sorted(p.name for p in tmp_path.iterdir()) == [*good, "efficiency.csv", "run.json"], "temp files left"
    record = json.loads((tmp_path / "run.json").read_text())
    assert sorted(record["cases"]) == sorted(Path(name).stem for name in good)  # the failed case has none
    assert all(entry["route"].startswith("litemedsam/") and entry["precision"] == record["precision"]["litemedsam"]
               for entry in record["cases"].values()), record["cases"]
    assert record["arguments"]["scheduler"] and len(record["routing_table"]["sha256"]) == 64


def test_dask_run_json_records_what_each_worker_ran_on(reference, cluster, tmp_path, monkeypatch, capsys) -> None:
    """With --scheduler and no --threads, run.json's `workers` holds, for each worker that ran cases, what that
    worker process reports of itself (host, CPU name and class, the precision and threads each model of this run
    was compiled at: w1 may use one CPU, so its threads are its own) and the cases the scheduler saw it run; each
    case names its worker. The client's own facts stay top-level: made to differ here (in this, the client's,
    process only), they must not reach the workers' records."""
    from distributed import Client, get_task_stream

    import router.provenance
    from models.pool import ModelPool

    monkeypatch.setattr(router.provenance, "cpu_name", lambda: "the client's CPU")
    monkeypatch.setattr(router.provenance, "this_cpu_class_name", lambda: "the client's class")
    monkeypatch.setattr(ModelPool, "resolve_precision", lambda self, name: "the client's precision")
    inputs, _, good, _ = reference

    def report(dask_worker) -> dict:
        """What the worker process says of itself: its name, host, CPU, the CPUs it may use (affinity, and
        models.hardware.cpu_budget: that capped by a CPU quota), and the (model, precision, threads) of every model
        this run's segmenters compiled, as OpenVINO reports them (the only run of the module without --threads)."""
        import socket

        import openvino as ov

        from models.hardware import cpu_budget, this_cpu_class_name
        from router.distributed import _SEGMENTERS

        compiled = {(name, predictor.precision, int(predictor.model.encoder.get_property("INFERENCE_NUM_THREADS")))
                    for (settings, _), segmenter in _SEGMENTERS.items() if settings.threads is None
                    for name, predictor in segmenter.pool._predictors.items()}
        return {"worker": str(dask_worker.name), "host": socket.gethostname(),
                "cpu": str(ov.Core().get_property("CPU", "FULL_DEVICE_NAME")), "cpu_class": this_cpu_class_name(),
                "cpus": len(os.sched_getaffinity(0)), "budget": cpu_budget(), "compiled": sorted(compiled)}

    with Client(scheduler_file=str(cluster.scheduler_file), timeout="30s") as client:
        with get_task_stream(client) as stream:
            status = predict.main(["-i", str(inputs), "-o", str(tmp_path), "--no-progress",
                                   "--scheduler", str(cluster.scheduler_file)])
        names = {address: str(info["name"]) for address, info in client.scheduler_info()["workers"].items()}
        reports = {facts["worker"]: facts for facts in client.run(report).values()}
    assert status == 1, capsys.readouterr().err  # the bad case
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["cpu"], record["cpu_class"]) == ("the client's CPU", "the client's class")
    assert set(record["precision"].values()) == {"the client's precision"}
    ran: dict[str, list[str]] = {}  # worker -> the stems of the good cases the scheduler saw it run
    for task in stream.data:
        case = task["key"].removeprefix("segment-").rsplit("-", 1)[0]  # "segment-<file name>-<token>"
        if case != BAD:
            ran.setdefault(names[task["worker"]], []).append(Path(case).stem)
    assert sorted(ran) == ["w0", "w1"], ran  # both idle when the cases came: each got some
    assert (reports["w1"]["cpus"], len(os.sched_getaffinity(0))) == (1, reports["w0"]["cpus"]), "w1 not pinned"

    expected = []
    for name in sorted(ran):
        facts = reports[name]
        (model, precision, threads), = facts["compiled"]  # one model, compiled once by the worker's one thread
        assert facts["cpu"] != "the client's CPU" and facts["cpu_class"] != "the client's class"
        assert threads == facts["budget"], "a worker's threads: its CPU budget over its 1 Dask thread"
        expected.append({**{key: facts[key] for key in ("worker", "host", "cpu", "cpu_class")}, "threads": threads,
                         "precision": {model: precision}, "cases": sorted(ran[name])})
    assert record["workers"] == expected
    assert sorted(record["cases"]) == sorted(Path(name).stem for name in good)
    by_worker = {row["worker"]: row for row in record["workers"]}
    for stem, entry in record["cases"].items():
        row = by_worker[entry["worker"]]
        assert stem in row["cases"], stem
        assert {key: entry[key] for key in ("worker", "host", "cpu", "cpu_class", "threads")} == \
            {key: row[key] for key in ("worker", "host", "cpu", "cpu_class", "threads")}, stem
        assert entry["precision"] == row["precision"][entry["model"]], stem


def test_dask_workers_use_the_ov_cache(reference, cluster, tmp_path, capsys) -> None:
    """--ov-cache reaches the workers: their compiled models land in the folder (it was dropped before)."""
    inputs, _, _, _ = reference
    cache = tmp_path / "ov-cache"
    predict.main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--threads", "1", "--no-progress",
                  "--ov-cache", str(cache), "--scheduler", str(cluster.scheduler_file)])
    blobs = [path for path in cache.rglob("*") if path.is_file()]
    assert blobs, capsys.readouterr().err


@pytest.mark.parametrize("backend", ["local", "dask"])
def test_continue_prediction_keeps_the_rows_of_cases_done_before(reference, cluster, tmp_path, capsys,
                                                                  backend) -> None:
    """--continue-prediction, in this process and with --scheduler (the one loop of router/runner.py): the
    cases done earlier keep their efficiency rows, and a killed write's temp file goes even where the case
    name holds glob characters."""
    inputs, _, good, _ = reference
    folder = tmp_path / "in"
    folder.mkdir()
    names = [good[0], "2DBox_Endoscopy_scan[1].npz"]
    (folder / names[0]).write_bytes((inputs / good[0]).read_bytes())
    (folder / names[1]).write_bytes((inputs / good[1]).read_bytes())  # another 2D Endoscopy case
    out = tmp_path / "out"
    out.mkdir()
    args = ["-i", str(folder), "-o", str(out), "--threads", "1", "--no-progress",
            *(["--scheduler", str(cluster.scheduler_file)] if backend == "dask" else [])]
    assert predict.main(args) == 0
    first = (out / "efficiency.csv").read_text().splitlines()
    first_cases = json.loads((out / "run.json").read_text())["cases"]
    (out / names[1]).unlink()
    (out / f".{names[1]}.k1ll3d.tmp").write_bytes(b"half")
    capsys.readouterr()
    assert predict.main([*args, "--continue-prediction"]) == 0
    err = capsys.readouterr().err.splitlines()
    if backend == "dask":  # every case is submitted at once: what is left is said first
        assert "1 case(s) already done; 1 to segment" in err and err[-1] == "done: 1 case(s) written, 0 failed", err
    else:
        assert err[-1] == "done: 1 case(s) written, 0 failed, 1 already done", err
    rows = dict(line.split(",") for line in (out / "efficiency.csv").read_text().splitlines()[1:])
    assert sorted(rows) == sorted(Path(name).stem for name in names)
    kept = Path(names[0]).stem
    assert f"{kept},{rows[kept]}" in first  # the earlier row, not a new one
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "efficiency.csv", "run.json"])
    cases = json.loads((out / "run.json").read_text())["cases"]  # the skipped case keeps its entry
    assert sorted(cases) == sorted(Path(name).stem for name in names)
    assert cases[kept] == first_cases[kept] and cases[kept]["route"] == "litemedsam/image2d"
    assert predict.main([*args, "--continue-prediction"]) == 0  # all done: every entry stays
    assert json.loads((out / "run.json").read_text())["cases"] == cases


def test_dask_worker_killed_mid_run_still_writes_every_output(reference, tmp_path) -> None:
    from distributed import Client

    inputs, local, good, _ = reference
    with local_cluster(2, tmp_path / "dask") as running:
        outputs = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "predict.py", "-i", str(inputs), "-o", str(outputs), "--threads", "1",
                                "--no-progress", "--scheduler", str(running.scheduler_file)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        victim = running.workers["w0"]
        with Client(scheduler_file=str(running.scheduler_file), timeout="30s") as client:
            address = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "w0")
            # kill once w0 has compiled its model (an output exists) and is busy with a case
            deadline = time.monotonic() + 240
            while not (list(outputs.glob("*.npz")) and client.processing(workers=[address]).get(address)):
                assert run.poll() is None and time.monotonic() < deadline, "the run ended before w0 was busy"
                time.sleep(0.05)
            written_before = len(list(outputs.glob("*.npz")))
            os.kill(victim.pid, signal.SIGKILL)
        out, err = run.communicate(timeout=300)
    assert written_before < len(good), "w0 was killed after every case was written"
    assert run.returncode == 1, err  # the bad case
    assert "done: 5 case(s) written, 1 failed" in err, err
    expected, got = _segs(local, good), _segs(outputs, good)
    for name in good:
        assert np.array_equal(got[name], expected[name]), name
    assert not list(outputs.glob(".*")), "temp files left behind"


def test_worker_summary_lists_each_workers_facts_and_cases() -> None:
    """`workers` of run.json from its case entries: one row per distinct worker facts, its cases sorted; a local
    case (no worker) is left out, and an entry of an earlier version without "threads" (kept by
    --continue-prediction) is its own row rather than an error."""
    from router.provenance import worker_summary

    def entry(worker: str, **more) -> dict:
        return {"model": "litemedsam", "precision": "bf16", "worker": worker, "host": "h", "cpu": "c",
                "cpu_class": "k", **more}

    cases = {"b": entry("w0", threads=2), "local": {"model": "litemedsam", "precision": "fp32"},
             "a": entry("w0", threads=2), "c": entry("w1", threads=1, precision="fp32"), "old": entry("w1")}
    facts = {"host": "h", "cpu": "c", "cpu_class": "k"}
    assert worker_summary(cases) == [
        {"worker": "w0", **facts, "threads": 2, "precision": {"litemedsam": "bf16"}, "cases": ["a", "b"]},
        {"worker": "w1", **facts, "threads": 1, "precision": {"litemedsam": "fp32"}, "cases": ["c"]},
        {"worker": "w1", **facts, "threads": None, "precision": {"litemedsam": "bf16"}, "cases": ["old"]},
    ]


def test_error_lines_are_one_line() -> None:
    """Some of Dask's messages span lines (a lost task, a graph the scheduler cannot read)."""
    from router.casefile import CaseError
    from router.messages import error_line

    assert error_line("a.npz", RuntimeError("Error during\n  deserialization\n\nsee docs")) == \
        "error: a.npz: RuntimeError: Error during deserialization see docs"
    assert error_line("a.npz", CaseError("'boxes' is missing")) == "error: a.npz: 'boxes' is missing"


def test_scheduler_without_dask_is_one_line(reference, tmp_path) -> None:
    """The slim image has no Dask: --scheduler then stops with one line and status 1."""
    inputs = reference[0]
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None; import predict; "
            f"sys.exit(predict.main(['-i', r'{inputs}', '-o', r'{tmp_path}', '--scheduler', 'tcp://127.0.0.1:1']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --scheduler needs Dask: pip install -r requirements-dev.txt (dask, distributed)")
