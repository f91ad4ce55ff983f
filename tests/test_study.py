"""benchmarks.study: variants side by side per (set, modality), wins/losses, reuse of computed rows."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.study import model_digest
from tests.helpers import ROOT, write_case


def _write_set(folder: Path) -> None:
    """A one-object US image and a 512 px image of twelve 14 px discs (small boxes: zoomed by the default)."""
    image = np.full((96, 128, 3), 40, np.uint8)
    gt = np.zeros((96, 128), np.uint8)
    gt[30:70, 40:100] = 1
    image[gt > 0] = 200
    write_case(folder / "imgs" / "2DBox_US_one.npz", imgs=image, boxes=np.array([[40, 30, 99, 69]]))
    write_case(folder / "gts" / "2DBox_US_one.npz", gts=gt)

    yy, xx = np.mgrid[:512, :512]
    discs = np.zeros((512, 512), np.uint8)
    boxes = []
    for i, (cy, cx) in enumerate((y, x) for y in (60, 200, 340, 470) for x in (80, 250, 420)):
        discs[(yy - cy) ** 2 + (xx - cx) ** 2 <= 49] = i + 1
        boxes.append([cx - 7, cy - 7, cx + 7, cy + 7])
    image = np.repeat(np.where(discs > 0, 210, 30).astype(np.uint8)[..., None], 3, axis=2)
    write_case(folder / "imgs" / "2DBox_Microscopy_discs.npz", imgs=image, boxes=np.array(boxes))
    write_case(folder / "gts" / "2DBox_Microscopy_discs.npz", gts=discs)


def _study(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.study", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_study_compares_variants_and_reuses_its_rows(tmp_path: Path, ir_dir: Path) -> None:
    _write_set(tmp_path / "cases")
    no_zoom, zoom = tmp_path / "no_zoom.toml", tmp_path / "zoom.toml"
    no_zoom.write_text('[default]\nmodel = "litemedsam"\n[default.image2d]\nzoom_below = 0.0\n')
    zoom.write_text('[default]\nmodel = "litemedsam"\n[default.image2d]\nzoom_stability = 2.0\n')  # every small box
    out = tmp_path / "out"
    args = ["--cases", f"s1={tmp_path / 'cases'}", "--variant", f"zoom=fp32@{zoom}",
            "--variant", f"whole=fp32@{no_zoom}", "--out", str(out), "--threads", "2"]
    done = _study(*args, "--models", str(ir_dir))
    assert done.returncode == 0, done.stderr
    with (out / "rows.csv").open() as f:
        rows = {(r["variant"], r["case"]): r for r in csv.DictReader(f)}
    assert len(rows) == 4 and not any(r["error"] for r in rows.values())
    # the default routing zooms the small discs (more than one encoder pass), the plain table does not
    assert int(rows[("zoom", "2DBox_Microscopy_discs")]["encoder_calls"]) > 1
    assert int(rows[("whole", "2DBox_Microscopy_discs")]["encoder_calls"]) == 1
    assert float(rows[("zoom", "2DBox_US_one")]["dsc"]) > 0.8
    table = (out / "study.md").read_text()
    for modality in ("Microscopy", "US", "all"):
        assert f"| s1 | {modality} |" in table
    assert "W/L vs zoom" in table

    # a rerun finds every (variant, case) in rows.csv: nothing runs
    lines = (out / "rows.csv").read_text()
    again = _study(*args, "--models", str(ir_dir))
    assert again.returncode == 0, again.stderr
    assert (out / "study.md").read_text() == table and (out / "rows.csv").read_text() == lines

    # other model files are another computation: nothing is reused (and here nothing can run)
    empty = tmp_path / "no_models_here"
    empty.mkdir()
    other = _study(*args, "--models", str(empty))
    with (out / "rows.csv").open() as f:
        fresh = [r for r in csv.DictReader(f) if r["key"].endswith(model_digest("fp32", empty))]
    assert len(fresh) == 4 and all(r["error"] for r in fresh), other.stderr
    assert model_digest("fp32", empty) != model_digest("fp32", ir_dir)
    assert model_digest("int8", ir_dir) != model_digest("fp32", ir_dir) and model_digest("torch", ir_dir) == "-"

    # an embedding store: the first run fills it, the second encodes nothing; both score as the plain run
    store = tmp_path / "store"
    for run in ("fill", "reuse"):
        stored = _study(*args[:-4], "--out", str(tmp_path / run), "--threads", "2", "--embeddings", str(store),
                        "--models", str(ir_dir))
        assert stored.returncode == 0, stored.stderr
        with (tmp_path / run / "rows.csv").open() as f:
            got = {(r["variant"], r["case"]): r for r in csv.DictReader(f)}
        for key, row in rows.items():
            assert got[key]["encoder_calls"] == row["encoder_calls"] and got[key]["dsc"] == row["dsc"]
        assert "not a speed figure" in (tmp_path / run / "study.md").read_text()
    assert len(list(store.rglob("*.npy"))) == 1 + int(rows[("zoom", "2DBox_Microscopy_discs")]["encoder_calls"])


def test_study_rejects_a_bad_variant(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    done = _study("--cases", f"s={tmp_path}", "--variant", "x=fp16", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "METHOD" in done.stderr
