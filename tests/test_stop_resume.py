"""Long runs lose nothing: SIGTERM mid-run, SIGKILL then --continue-prediction, a bomb before a good case,
a read-only output folder. Real predict.py processes on real LiteMedSAM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from router.casefile import write_segs
from router.pipeline import is_done
from tests.helpers import ROOT, blob_volume, tight_box3d, write_case
from tests.test_memory import forged_npz

FIRST = "2DBox_Endoscopy_a.npz"  # sorted first: its output appearing means the run is under way


def write_cases(inputs: Path) -> list[str]:
    """A quick 2D case, then two 5-slice 3D cases (each takes far longer than the poll below)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
    image[20:40, 30:60] = 220
    write_case(inputs / FIRST, imgs=image, boxes=np.array([[28, 18, 61, 41]]))
    for name, seed in (("3DBox_CT_b.npz", 1), ("3DBox_MR_c.npz", 2)):
        volume, mask = blob_volume(shape=(5, 64, 64), centre=(2, 30, 32), radii=(2, 16, 12), seed=seed)
        write_case(inputs / name, imgs=volume, boxes=tight_box3d(mask)[None], spacing=np.array([1.0, 1.0, 2.0]))
    return sorted(p.name for p in inputs.iterdir())


def predict_command(inputs: Path, outputs: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "predict.py"), "-i", str(inputs), "-o", str(outputs), "--no-progress",
            "--threads", "2", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start_and_signal(inputs: Path, outputs: Path, signum: int) -> tuple[int, str]:
    """Start predict.py, send `signum` once the first case is written (the second is then running)."""
    process = subprocess.Popen(predict_command(inputs, outputs), cwd=ROOT, env=environment(),
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (outputs / FIRST).exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the first case was never written"
        time.sleep(0.02)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def segs_of(folder: Path) -> dict[str, np.ndarray]:
    result = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as npz:
            result[path.name] = npz["segs"]
    return result


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_sigterm_stops_cleanly_mid_run(tmp_path, ir_dir):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_cases(inputs)
    status, err = start_and_signal(inputs, outputs, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM ") and "rerun with --continue-prediction" in last, err
    assert "3DBox_MR_c.npz" not in os.listdir(outputs)  # the run did stop: the last case never started
    assert temp_files(outputs) == []
    done = set(segs_of(outputs))
    assert FIRST in done
    rows = (outputs / "efficiency.csv").read_text().splitlines()
    assert rows[0] == "case,seconds" and {row.split(",")[0] + ".npz" for row in rows[1:]} == done


def test_sigkill_then_continue_prediction_matches_an_uninterrupted_run(tmp_path, ir_dir):
    inputs, outputs, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    names = write_cases(inputs)
    status, _ = start_and_signal(inputs, outputs, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert "3DBox_MR_c.npz" not in os.listdir(outputs)
    # What a kill can leave, here forced whenever the kill landed: a temp file of a case's write and of the
    # efficiency file's rewrite, and a truncated output.
    (outputs / ".3DBox_CT_b.npz.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half of a zip")
    (outputs / ".efficiency.csv.k1ll3d.tmp").write_text("case,seconds\n2DBox_Microscope_a,1.0")
    (outputs / ".run.json.k1ll3d.tmp").write_text('{"cases": {')
    (outputs / "3DBox_MR_c.npz").write_bytes((outputs / FIRST).read_bytes()[:100])
    first_written = (outputs / FIRST).stat().st_mtime_ns

    resumed = subprocess.run(predict_command(inputs, outputs, "--continue-prediction"), cwd=ROOT,
                             env=environment(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 already done" in resumed.stderr.splitlines()[-1] or "2 already done" in resumed.stderr, resumed.stderr
    assert (outputs / FIRST).stat().st_mtime_ns == first_written  # skipped, not redone
    assert temp_files(outputs) == []

    whole = subprocess.run(predict_command(inputs, reference), cwd=ROOT, env=environment(),
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    expected, got = segs_of(reference), segs_of(outputs)
    assert sorted(got) == sorted(expected) == names
    for name in names:
        assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name
    rows = (outputs / "efficiency.csv").read_text().splitlines()
    assert sorted(row.split(",")[0] + ".npz" for row in rows[1:]) == names


def test_inflating_case_is_refused_and_the_next_runs(tmp_path, ir_dir):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    # Sorted before the good case; its header declares a 1 TB volume (the data is not there: the guard
    # must refuse it from the header alone, before anything is decompressed).
    inputs.mkdir()
    forged_npz(inputs / "3DBox_CT_aabomb.npz", (10000, 10000, 10000))
    volume, mask = blob_volume(shape=(12, 64, 64), centre=(6, 30, 32), radii=(3, 12, 10))
    write_case(inputs / "3DBox_CT_good.npz", imgs=volume, boxes=tight_box3d(mask)[None])
    result = subprocess.run(predict_command(inputs, outputs), cwd=ROOT, env=environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 3DBox_CT_aabomb.npz: needs "), result.stderr
    assert " GiB of memory, " in errors[0] and " GiB available" in errors[0]
    assert sorted(segs_of(outputs)) == ["3DBox_CT_good.npz"]


def test_read_only_output_folder_is_one_error(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_case(inputs / FIRST, imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.array([[1, 1, 4, 4]]))
    outputs.mkdir()
    command = predict_command(inputs, outputs)
    if os.geteuid() == 0:  # root writes through permission bits: mount the folder read-only instead
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare: cannot make a read-only folder")
        command = ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(outputs),
                   *command]
    else:
        outputs.chmod(0o555)
    result = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    if "mount:" in result.stderr:
        pytest.skip(f"no read-only bind mount here: {result.stderr.strip()}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: output folder {outputs} is not writable (Read-only file "
                                                  "system)" if os.geteuid() == 0 else
                                                  f"error: output folder {outputs} is not writable (Permission denied)"]
    assert os.listdir(outputs) == []


def test_done_means_a_whole_segs_of_the_image_shape(tmp_path):
    case = write_case(tmp_path / "in" / "3DBox_CT_x.npz", imgs=np.zeros((4, 8, 9), np.int16),
                      boxes=np.array([[1, 1, 1, 5, 5, 2]]))
    output = tmp_path / "out" / case.name
    assert not is_done(case, output)  # missing
    write_segs(output, np.zeros((4, 8, 9), np.uint16))
    assert is_done(case, output)
    write_segs(output, np.zeros((4, 8, 8), np.uint8))
    assert not is_done(case, output)  # another shape
    write_case(output, gts=np.zeros((4, 8, 9), np.uint8))
    assert not is_done(case, output)  # no segs
    write_segs(output, np.zeros((4, 8, 9), np.uint8))
    output.write_bytes(output.read_bytes()[:-20])
    assert not is_done(case, output)  # truncated
    grey = write_case(tmp_path / "in" / "2DBox_US_y.npz", imgs=np.zeros((6, 7), np.uint8), boxes=np.zeros((0, 4)))
    write_segs(tmp_path / "out" / grey.name, np.zeros((6, 7), np.uint8))
    assert is_done(grey, tmp_path / "out" / grey.name)
