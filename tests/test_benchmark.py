"""benchmarks/: the child's JSON contract, the table printer, the compute section and the big image (no timing
assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import big_cases, report, roofline
from tests.helpers import ROOT, write_case


def test_child_fp32_reports_figures(tmp_path, ir_dir):
    image = np.full((64, 80, 3), 30, np.uint8)
    image[20:40, 30:60] = 220
    gt = np.zeros((64, 80), np.uint8)
    gt[20:40, 30:60] = 1
    boxes = np.array([[30, 20, 59, 39]])
    case = write_case(tmp_path / "imgs" / "2DBox_US_tiny.npz", imgs=image, boxes=boxes)
    gt_file = write_case(tmp_path / "gts" / "2DBox_US_tiny.npz", gts=gt, boxes=boxes)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--child", "fp32", str(case), "--gt", str(gt_file),
         "--threads", "2", "--models", str(ir_dir)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["method"] == "fp32" and result["case"] == "2DBox_US_tiny"
    assert result["seconds"] > 0 and result["load_seconds"] > 0
    assert result["encoder_calls"] == 1 and result["encoder_ms"] > 0
    assert result["rss_mib"] > 0
    # a bright rectangle on a dark ground, boxed tightly: DSC 0.74 measured (fp32, AMD EPYC Zen 5); empty or
    # misplaced masks score 0
    assert result["dsc"] > 0.6 and result["nsd"] > 0.6


def test_table_printer_handles_missing_and_failed_methods():
    figures = {"seconds": 2.0, "load_seconds": 1.0, "encoder_calls": 1, "encoder_seconds": 0.5, "encoder_ms": 500.0,
               "rss_mib": 300.0, "dsc": 0.9, "nsd": 0.95, "model": "litemedsam"}
    rows = [
        {"case": "2DBox_US_a", "method": "torch", **figures, "seconds": 4.0},
        {"case": "2DBox_US_a", "method": "fp32", **figures},
        {"case": "3DBox_CT_b", "method": "fp32", **figures},  # no torch row: '-' cells, no speed-up
        {"case": "3DBox_CT_b", "method": "int8", "error": "RuntimeError: boom"},
    ]
    for r in rows:
        r.update(group=report.case_group(r["case"]), modality=report.case_modality(r["case"]))
    report.add_speedups(rows)
    methods = ["torch", "fp32", "int8"]
    table = report.format_table(rows, methods, report.SPEED_COLUMNS)
    lines = table.splitlines()
    assert len(lines) == 5 and "ERR" in lines[4]
    assert lines[3].split("|")[3].split() == ["-"] * len(report.SPEED_COLUMNS)  # int8 never ran on case a
    assert lines[4].split("|")[1].split() == ["-"] * len(report.SPEED_COLUMNS)  # torch never ran on case b
    assert "2.0" in lines[3].split("|")[2]  # speed-up 4 s / 2 s
    summaries = report.format_summaries(rows, methods)
    assert "2D: mean 2.0x" in summaries and "3D: -" in summaries


@pytest.mark.integration  # a 137 GFLOP MatMul: tens of seconds on 2 cores
def test_roof_child_and_compute_section():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--child", "roof", "-", "--threads", "2"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    roof = json.loads(done.stdout.strip().splitlines()[-1])["roof"]
    assert roof["fp32"] > 1.0 and all(rate > 0 for rate in roof.values())
    rows = [{"case": "2DBox_US_a", "method": "fp32", "model": "litemedsam", "encoder_calls": 2, "encoder_seconds": 1.0}]
    text = roofline.format_compute(rows, ["fp32"], 75.0, 2, 2, {"fp32": 300.0})
    # 75 GFLOP in 0.5 s = 150 GFLOP/s = half of the 300 GFLOP/s roof
    assert "fp32 measured roof: 300 GFLOP/s" in text and "150.0 GFLOP/s" in text and "50% of the measured roof" in text


def test_big_image_boxes_are_tight_and_in_label_order(tmp_path):
    case, gt = big_cases.make_big_image(tmp_path, size=256, objects=40)
    with np.load(case) as npz:
        image, boxes = npz["imgs"], npz["boxes"]
    with np.load(gt) as npz:
        labels = npz["gts"]
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert len(boxes) == labels.max() > 20
    for label, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        ys, xs = np.nonzero(labels == label)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
    assert report.case_group(case.stem) == "big"


def test_precision_table_lists_every_class_and_marks_this_cpu():
    from models.hardware import PRECISION_TABLE, cpu_class, cpu_flags, cpu_has_bf16

    rows = [{"method": "fp32", "model": "litemedsam", "encoder_calls": 4, "encoder_seconds": 1.2}]
    text = report.format_precision_table(rows, ["fp32"])
    assert all(row.cpu in text and row.source in text for row in PRECISION_TABLE)
    if cpu_class(cpu_has_bf16(), cpu_flags()) is not None:
        assert "^ this CPU; this run measured fp32 300 ms" in text
        assert "(INT8 encoder: " in text  # the recipe auto's choice depends on


def test_int8_arithmetic_prints_kernels_and_exact_rows_and_timings(ir_dir, capsys):
    """benchmarks.int8_arithmetic (docs/results.md, "INT8 without VNNI"): one row per INT8 encoder and
    arithmetic, cosines in (0, 1], and a timing line for FP32 and each INT8 encoder."""
    from benchmarks import int8_arithmetic

    assert int8_arithmetic.main(["--repeats", "1", "--control-every", "24", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| built |")]
    assert [row[1] for row in rows] == ["kernels", "exact"]
    for row in rows:
        cosines = [float(value) for value in row[2].split(", ")]
        assert len(cosines) == 3 and all(0.9 < value <= 1.0 for value in cosines)
        assert 0.5 < float(row[3].strip(" |")) <= 1.0
    assert "int8 kernels exact" in out or "int8 kernels saturating" in out
    assert "  fp32: " in out and "  built: " in out


def test_startup_anatomy_times_every_step_of_a_one_case_run(tmp_path, ir_dir):
    image = np.full((64, 80, 3), 30, np.uint8)
    image[20:40, 30:60] = 220
    case = write_case(tmp_path / "2DBox_US_tiny.npz", imgs=image, boxes=np.array([[30, 20, 59, 39]]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--host", "--runs", "1", "--case", str(case)],
                          cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ,
                                                                                        "SEG_MODEL_DIR": str(ir_dir)})
    assert done.returncode == 0, done.stderr
    from benchmarks.startup import ANATOMY_STEPS

    lines = {line.strip().rsplit("  ", 1)[0].strip(): line for line in done.stdout.splitlines()[1:]}
    assert set(ANATOMY_STEPS) <= set(lines) and "anatomy, all steps" in lines
    compile_seconds = float(lines["read + compile encoder and decoder"].split()[-2])
    assert compile_seconds > 0.01  # the models really were read and compiled in the child


def test_agreement_counts_differing_voxels_per_label() -> None:
    from benchmarks.agreement import agreement

    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    a[0, :4], b[0, 1:] = 1, 1  # 4 and 4 pixels, 3 shared: union 5
    b[3, 0] = 2  # only in b
    rows = {row.label: row for row in agreement(a, b, "c")}
    assert sorted(rows) == [1, 2]
    assert rows[1].differing == 2 and rows[1].dsc == 2 * 3 / 8 and rows[1].share == 2 / 5
    assert rows[2].dsc == 0 and rows[2].share == 1
    with pytest.raises(ValueError, match="shapes differ"):
        agreement(a, b[:3], "c")
