"""Tests of evaluation/compute_metrics.py on crafted masks with known answers (no shared data)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation import compute_metrics as cm  # isort: skip (shims np.Inf before surface_distance loads)
from surface_distance import (  # noqa: I001
    compute_dice_coefficient,
    compute_surface_dice_at_tolerance,
    compute_surface_distances,
)

ROOT = Path(__file__).resolve().parents[1]

# The known-shift case: a rod of L voxels along the last axis, 1x1 voxel in cross-section, and the same
# rod shifted by K voxels along its axis. Spacing 1 mm, tolerance 2 mm.
#
# Counting surface elements (surface_distance puts them on the voxel-corner grid, one per corner point
# whose 2x2x2 neighbourhood is mixed): the rod has 4 corner lines of L+1 points.
#  * the 2 x 4 end points see 1 voxel in their neighbourhood: one triangle, normal (1/8, 1/8, 1/8),
#    area a_end = sqrt(3)/8;
#  * the 4(L-1) inner points see 2 voxels: two triangles of normal (1/4, 1/4, 0), area a_mid = sqrt(2)/2.
#  So a surface area A = 8 a_end + 4 (L-1) a_mid, the same for GT and prediction.
# A GT point at position x (0..L) lies on the same corner line as the predicted points K..L+K, so its
# distance to the predicted surface is max(0, K - x) mm. With K = 3 only x = 0 is beyond 2 mm: the 4
# GT end points at x = 0 miss, and by symmetry the 4 predicted end points at x = L + K.
#   NSD = (2A - 8 a_end) / 2A = 1 - 4 a_end / A;   DSC = 2 (L - K) / 2L = (L - K) / L.
L, K = 10, 3
A_END, A_MID = math.sqrt(3) / 8, math.sqrt(2) / 2
ROD_NSD = 1 - 4 * A_END / (8 * A_END + 4 * (L - 1) * A_MID)  # = 0.96815...


def rod_pair(length: int = L, shift: int = K, label: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """GT and prediction ``(3, 3, 24)`` uint8: one rod of ``length`` voxels and the same rod shifted."""
    gt = np.zeros((3, 3, 24), np.uint8)
    seg = np.zeros_like(gt)
    gt[1, 1, 2 : 2 + length] = label
    seg[1, 1, 2 + shift : 2 + shift + length] = label
    return seg, gt


def blobs(shape: tuple[int, ...], n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Label map ``shape`` with ``n_labels`` random boxes (later labels overwrite earlier ones)."""
    out = np.zeros(shape, np.uint8)
    for label in range(1, n_labels + 1):
        lo = [int(rng.integers(0, s // 2)) for s in shape]
        hi = [lo_i + int(rng.integers(2, s // 2)) for lo_i, s in zip(lo, shape, strict=False)]
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=False))] = label
    return out


def test_identical_masks_score_one() -> None:
    gt3 = blobs((12, 20, 20), 3, np.random.default_rng(0))
    gt2 = blobs((30, 40), 2, np.random.default_rng(1))
    assert cm.score_case(gt3.copy(), gt3, (2.0, 0.7, 0.7))[:2] == (1.0, 1.0)
    assert cm.score_case(gt2.copy(), gt2, None)[:2] == (1.0, 1.0)


def test_disjoint_masks_score_zero() -> None:
    gt = np.zeros((10, 30, 30), np.uint8)
    seg = np.zeros_like(gt)
    gt[2:5, 2:8, 2:8] = 1
    seg[6:9, 20:28, 20:28] = 1
    dsc, nsd, notes = cm.score_case(seg, gt, (1.0, 1.0, 1.0), warn=False)
    assert (dsc, nsd) == (0.0, 0.0)
    assert cm.per_label_nsd(seg, gt, [1], (1.0, 1.0, 1.0)) == [0.0]  # far apart: 0 even without the rule
    assert any("0.2" in n for n in notes)


def test_known_shift_matches_hand_count() -> None:
    seg, gt = rod_pair()
    dsc, nsd, _ = cm.score_case(seg, gt, (1.0, 1.0, 1.0))
    assert dsc == pytest.approx((L - K) / L)
    assert nsd == pytest.approx(ROD_NSD, abs=1e-12)
    assert nsd != 1.0  # the tolerance really bites


def test_anisotropic_spacing_changes_nsd() -> None:
    seg, gt = rod_pair()
    fine = cm.score_case(seg, gt, (1.0, 1.0, 0.5))[1]  # shift 3 x 0.5 = 1.5 mm <= 2: every point within
    iso = cm.score_case(seg, gt, (1.0, 1.0, 1.0))[1]
    coarse = cm.score_case(seg, gt, (1.0, 1.0, 2.0))[1]  # points at 6 and 4 mm now miss
    assert fine == 1.0
    assert iso == pytest.approx(ROD_NSD)
    assert coarse < iso
    # spacing across the rod does not move the rod ends closer: a different number than along it
    assert cm.score_case(seg, gt, (0.5, 1.0, 1.0))[1] < 1.0


def test_label_gaps_are_skipped_not_nan() -> None:
    gt = np.zeros((20, 20), np.uint8)
    gt[2:8, 2:8] = 1
    gt[10:18, 10:18] = 3  # label 2 missing from the GT
    seg = gt.copy()
    seg[0, 0] = 2  # the prediction has it: the official script would count a 0 for it
    with pytest.warns(UserWarning, match=r"labels \[2\] absent"):
        dsc, nsd, notes = cm.score_case(seg, gt, None)
    assert (dsc, nsd) == (1.0, 1.0)
    assert notes == ["labels [2] absent from GT, skipped"]
    assert cm.gt_labels(gt) == ([1, 3], [2])


def test_nsd_zeroed_when_case_mean_dsc_not_above_0_2() -> None:
    seg, gt = rod_pair(shift=8)  # DSC = 2*2/20 = 0.2 exactly: not > 0.2
    raw = cm.per_label_nsd(seg, gt, [1], (1.0, 1.0, 1.0))[0]
    dsc, nsd, notes = cm.score_case(seg, gt, (1.0, 1.0, 1.0), warn=False)
    assert dsc == pytest.approx(0.2)
    assert raw > 0.0
    assert nsd == 0.0
    assert "NSD set to 0" in notes[0]
    seg, gt = rod_pair(shift=7)  # DSC 0.3: NSD kept
    assert cm.score_case(seg, gt, (1.0, 1.0, 1.0))[1] == pytest.approx(
        cm.per_label_nsd(seg, gt, [1], (1.0, 1.0, 1.0))[0]
    )


def test_0_2_rule_is_per_case_like_the_official_evaluator() -> None:
    # label 1 perfect, label 2 a rod shifted by its own length (DSC 0, but its ends touch: raw NSD > 0).
    gt = np.zeros((3, 7, 24), np.uint8)
    gt[1, 1, 2:12] = 1
    gt[1, 5, 2:5] = 2
    seg = gt.copy()
    seg[1, 5, 2:5] = 0
    seg[1, 5, 5:8] = 2
    spacing = (1.0, 1.0, 1.0)
    assert cm.per_label_dsc(seg, gt, [1, 2]) == [1.0, 0.0]
    nsd2 = cm.per_label_nsd(seg, gt, [2], spacing)[0]
    assert nsd2 > 0.0
    dsc, nsd, _ = cm.score_case(seg, gt, spacing)
    assert dsc == 0.5
    assert nsd == pytest.approx((1.0 + nsd2) / 2)  # label 2's NSD is not zeroed by its own DSC


@pytest.mark.filterwarnings(r"ignore:.*scipy\.ndimage.* namespace:DeprecationWarning")  # inside surface_distance
@pytest.mark.parametrize("ndim", [2, 3])
def test_agrees_with_surface_distance_on_random_masks(ndim: int) -> None:
    rng = np.random.default_rng(42 + ndim)
    shape = (40, 50) if ndim == 2 else (14, 30, 26)
    spacing = None if ndim == 2 else (2.5, 0.8, 1.3)
    gt = blobs(shape, 4, rng)
    seg = gt.copy()
    flip = rng.random(shape) < 0.04  # noisy prediction: DSC stays > 0.2
    seg[flip] = rng.integers(0, 5, int(flip.sum()))
    labels = [i for i in range(1, int(gt.max()) + 1) if (gt == i).any()]
    # the official evaluator's handling: 2D masks get a trailing axis and spacing (1, 1, 1)
    gt_3 = gt[..., None] if ndim == 2 else gt
    seg_3 = seg[..., None] if ndim == 2 else seg
    sp = (1.0, 1.0, 1.0) if ndim == 2 else spacing
    want_dsc = np.mean([compute_dice_coefficient(gt == i, seg == i) for i in labels])
    want_nsd = np.mean(
        [
            compute_surface_dice_at_tolerance(compute_surface_distances(gt_3 == i, seg_3 == i, sp), 2.0)
            for i in labels
        ]
    )
    dsc, nsd, _ = cm.score_case(seg, gt, spacing, 2.0, warn=False)
    assert want_dsc > 0.2
    assert 0.0 < want_nsd < 1.0
    assert abs(dsc - want_dsc) < 1e-9
    assert abs(nsd - want_nsd) < 1e-9


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        cm.score_case(np.zeros((4, 4), np.uint8), np.ones((4, 5), np.uint8), None)


def test_gt_with_bad_spacing_is_reported_and_the_others_still_scored(tmp_path: Path) -> None:
    seg, gt = rod_pair()
    (tmp_path / "gts").mkdir()
    (tmp_path / "segs").mkdir()
    np.savez(tmp_path / "gts" / "3DBox_CT_bad.npz", gts=gt, spacing=np.array([1.0, 1.0]))
    np.savez(tmp_path / "gts" / "3DBox_CT_good.npz", gts=gt, spacing=np.array([1.0, 1.0, 1.0]))
    for name in ("3DBox_CT_bad.npz", "3DBox_CT_good.npz"):
        np.savez(tmp_path / "segs" / name, segs=gt)
    rows = {r["case"]: r for r in cm.evaluate(tmp_path / "segs", tmp_path / "gts", workers=1, progress=False)}
    assert rows["3DBox_CT_bad.npz"]["status"] == "gt_unreadable"
    assert "spacing" in rows["3DBox_CT_bad.npz"]["note"]
    assert (rows["3DBox_CT_good.npz"]["status"], rows["3DBox_CT_good.npz"]["DSC"]) == ("ok", 1.0)


def test_spacing_orders_differ_on_anisotropic_case(tmp_path: Path) -> None:
    seg, gt = rod_pair()  # rod along the last array axis, i.e. x
    (tmp_path / "gts").mkdir()
    (tmp_path / "segs").mkdir()
    # stored (x, y, z): x is fine (0.5 mm), so physically the 3-voxel shift is 1.5 mm -> NSD 1
    np.savez(tmp_path / "gts" / "3DBox_CT_rod.npz", gts=gt, spacing=np.array([0.5, 1.0, 1.0]))
    np.savez(tmp_path / "segs" / "3DBox_CT_rod.npz", segs=seg)
    assert cm.nsd_spacing([0.5, 1.0, 1.0], 3, "official") == (0.5, 1.0, 1.0)
    assert cm.nsd_spacing([0.5, 1.0, 1.0], 3, "zyx") == (1.0, 1.0, 0.5)
    assert cm.nsd_spacing([0.5, 1.0, 1.0], 2, "zyx") == (1.0, 1.0)
    official = cm.evaluate(tmp_path / "segs", tmp_path / "gts", "official", workers=1, progress=False)
    zyx = cm.evaluate(tmp_path / "segs", tmp_path / "gts", "zyx", workers=1, progress=False)
    assert zyx[0]["NSD"] == 1.0
    assert official[0]["NSD"] < 1.0  # the official order measures along x with the z spacing
    assert official[0]["DSC"] == zyx[0]["DSC"]


def test_numpy2_inf_shim_in_fresh_interpreter() -> None:
    code = (
        "import numpy as np\n"
        "assert int(np.__version__.split('.')[0]) >= 2, np.__version__\n"
        "assert not hasattr(np, 'Inf') and not hasattr(np, 'NaN')  # removed in NumPy 2\n"
        "from evaluation import compute_metrics as cm\n"
        "assert np.Inf == np.inf and np.isnan(np.NaN)\n"
        # an empty predicted label takes surface_distance's np.Inf branch
        "gt = np.zeros((8, 8, 8), np.uint8); gt[2:6, 2:6, 2:6] = 1\n"
        "assert cm.per_label_nsd(np.zeros_like(gt), gt, [1], (1.0, 1.0, 1.0)) == [0.0]\n"
        "import surface_distance as sd\n"
        "assert np.isnan(sd.compute_dice_coefficient(gt == 9, gt == 9))  # its np.NaN branch\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_read_runtimes_accepts_both_formats(tmp_path: Path) -> None:
    ours = tmp_path / "efficiency.csv"
    ours.write_text("case,seconds\n2DBox_US_a,1.5\n")
    theirs = tmp_path / "team_running_time.csv"
    theirs.write_text("case,runtime\n3DBox_CT_b.npz,7.25\n")
    official = tmp_path / "official.csv"
    official.write_text("CaseName,RunningTime\n3DBox_CT_c.npz,2\n")
    assert cm.read_runtimes(ours) == {"2DBox_US_a": 1.5}
    assert cm.read_runtimes(theirs) == {"3DBox_CT_b": 7.25}
    assert cm.read_runtimes(official) == {"3DBox_CT_c": 2.0}


def test_modality_column_uses_the_router_case_name_parser(tmp_path: Path) -> None:
    (tmp_path / "gts").mkdir()
    (tmp_path / "segs").mkdir()
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 1
    names = ("2DBox_X-Ray_JSRT004.npz", "2DBox_Microscope_a.npz", "2DBox_Foo_b.npz", "other.npz")
    for name in names:
        np.savez(tmp_path / "gts" / name, gts=gt)
        np.savez(tmp_path / "segs" / name, segs=gt)
    rows = cm.evaluate(tmp_path / "segs", tmp_path / "gts", workers=1, progress=False)
    assert {r["case"]: r["modality"] for r in rows} == {
        "2DBox_X-Ray_JSRT004.npz": "XRay",  # canonical names, as the router's parse_case_name
        "2DBox_Microscope_a.npz": "Microscopy",
        "2DBox_Foo_b.npz": "Unknown:Foo",
        "other.npz": "unknown",  # not a challenge name: still scored, not an error
    }
    assert all(r["status"] == "ok" for r in rows)


def _write_cli_fixture(root: Path) -> tuple[Path, Path, Path]:
    """GT, prediction and image folders: 2 good cases, one missing, one wrongly shaped, one unreadable."""
    gts, segs, imgs = root / "gts", root / "segs", root / "imgs"
    for d in (gts, segs, imgs):
        d.mkdir()
    rng = np.random.default_rng(7)
    gt2 = blobs((32, 40), 2, rng)
    gt3 = blobs((8, 24, 20), 2, rng)
    spacing = np.array([0.8, 0.8, 2.5])
    boxes2 = np.array([[1, 1, 10, 10]])
    boxes3 = np.array([[1, 1, 0, 10, 10, 5]])
    np.savez(gts / "2DBox_US_good.npz", gts=gt2)
    np.savez(segs / "2DBox_US_good.npz", segs=gt2)
    np.savez(imgs / "2DBox_US_good.npz", imgs=np.zeros((32, 40, 3), np.uint8), boxes=boxes2)
    np.savez(gts / "3DBox_CT_good.npz", gts=gt3, spacing=spacing)
    np.savez(segs / "3DBox_CT_good.npz", segs=gt3.astype(np.uint16))
    np.savez(imgs / "3DBox_CT_good.npz", imgs=np.zeros(gt3.shape, np.uint8), boxes=boxes3, spacing=spacing)
    np.savez(gts / "3DBox_CT_missing.npz", gts=gt3, spacing=spacing)
    np.savez(imgs / "3DBox_CT_missing.npz", imgs=np.zeros(gt3.shape, np.uint8), boxes=boxes3, spacing=spacing)
    np.savez(gts / "2DBox_US_wrongshape.npz", gts=gt2)
    np.savez(segs / "2DBox_US_wrongshape.npz", segs=gt2.T)
    np.savez(imgs / "2DBox_US_wrongshape.npz", imgs=np.zeros((32, 40, 3), np.uint8), boxes=boxes2)
    np.savez(gts / "2DBox_US_garbage.npz", gts=gt2)
    np.savez(imgs / "2DBox_US_garbage.npz", imgs=np.zeros((32, 40), np.uint8), boxes=boxes2)  # grey image
    (segs / "2DBox_US_garbage.npz").write_bytes(b"not a zip file")
    (root / "efficiency.csv").write_text("case,seconds\n2DBox_US_good,0.5\n3DBox_CT_good,3.0\n")
    return gts, segs, imgs


def test_cli_end_to_end(tmp_path: Path) -> None:
    gts, segs, imgs = _write_cli_fixture(tmp_path)
    out = tmp_path / "out" / "metrics.csv"
    cmd = [
        sys.executable, "-m", "evaluation.compute_metrics", "-s", str(segs), "-g", str(gts), "-o", str(out),
        "--workers", "2", "--plots", str(tmp_path / "plots"), "--efficiency", str(tmp_path / "efficiency.csv"),
        "--images", str(imgs), "--save-nii", str(tmp_path / "nii"),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "ALL" in done.stdout and "US" in done.stdout

    rows = {r["case"]: r for r in csv.DictReader(out.open())}
    assert list(next(csv.reader(out.open()))) == [*cm.CSV_COLUMNS, "seconds"]
    assert {c: r["status"] for c, r in rows.items()} == {
        "2DBox_US_good.npz": "ok",
        "3DBox_CT_good.npz": "ok",
        "3DBox_CT_missing.npz": "missing",
        "2DBox_US_wrongshape.npz": "wrong_shape",
        "2DBox_US_garbage.npz": "unreadable",
    }
    for case, r in rows.items():
        want = 1.0 if "good" in case else 0.0
        assert (float(r["DSC"]), float(r["NSD"])) == (want, want), case
        assert r["modality"] == ("US" if case.startswith("2D") else "CT")
    assert rows["3DBox_CT_good.npz"]["shape"] == "8x24x20"

    summary = json.loads((tmp_path / "out" / "metrics_summary.json").read_text())
    assert summary["n_cases"] == 5
    assert summary["per_modality"]["US"]["n"] == 3
    assert summary["per_modality"]["US"]["DSC_mean"] == pytest.approx(1 / 3)
    assert summary["overall"]["DSC_mean"] == pytest.approx(2 / 5)
    assert summary["status_counts"]["missing"] == 1
    per_mod = list(csv.DictReader((tmp_path / "out" / "metrics_per_modality.csv").open()))
    assert [r["modality"] for r in per_mod] == ["CT", "US", "ALL"]

    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    assert {"per_modality.png", "runtime_vs_dsc.png"} <= plots
    assert {"worst_CT_3DBox_CT_missing.png", "worst_US_2DBox_US_garbage.png"} <= plots
    nii = {p.name for p in (tmp_path / "nii").iterdir()}
    assert {"3DBox_CT_good_gt.nii.gz", "3DBox_CT_good_seg.nii.gz", "3DBox_CT_good_img.nii.gz"} <= nii
    assert "3DBox_CT_missing_seg.nii.gz" not in nii

    import SimpleITK as sitk

    image = sitk.ReadImage(str(tmp_path / "nii" / "3DBox_CT_good_gt.nii.gz"))
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.5))
    assert image.GetSize() == (20, 24, 8)


def test_cli_runs_as_script_and_documents_spacing_orders() -> None:
    """`python evaluation/compute_metrics.py` (the challenge's way); the checkout on PYTHONPATH stands for
    ./build.sh setup's install, which makes `router` importable from the script's folder."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "evaluation" / "compute_metrics.py"), "--help"],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "official" in done.stdout and "zyx" in done.stdout
