"""Score box-prompted segmentations with DSC and NSD, following the CVPR 2024 "MedSAM on Laptop" rules.

Inputs (one ``.npz`` per case, named ``2DBox_<Modality>_<id>.npz`` or ``3DBox_<Modality>_<id>.npz``):

* SEGS dir: key ``segs``, label map, 2D ``(H, W)`` or 3D ``(D, H, W)``.
* GTS dir: key ``gts``, same shape; 3D files also hold ``spacing`` ``(3,)`` in SimpleITK order
  ``(x, y, z)`` while the arrays are ``(z, y, x)``.

Rules (those of the challenge's ``evaluation/compute_metrics.py``, bowang-lab/MedSAM branch LiteMedSAM):

* Every GT file is a case. Labels are ``1..max(gt)``; the case DSC and NSD are means over labels.
* DSC and surface distances come from DeepMind's ``surface_distance`` package; NSD tolerance 2 mm.
* NSD is only computed when the case's *mean* DSC is > 0.2; otherwise the case NSD is 0
  (a case-level rule, not per label).
* 2D cases: the masks get a trailing axis, ``(H, W, 1)``, and spacing ``(1, 1, 1)``. The surface
  therefore includes the top and bottom faces of the one-voxel slab, which is *not* the NSD of
  2D contours; it is what the leaderboard used, so it is reproduced as is.
* 3D spacing order (``--spacing-order``):

  - ``official`` (default): the stored ``(x, y, z)`` spacing is passed as is to arrays whose axes are
    ``(z, y, x)``, exactly as the official evaluator does, so numbers match the leaderboard.
    For anisotropic volumes this measures distances along z with the x spacing and vice versa.
  - ``zyx``: the spacing is reversed to ``(z, y, x)`` to match the array axes (physically right).

Deviations, on purpose: a missing, unreadable or wrongly shaped prediction scores DSC = NSD = 0 and
is flagged in the ``status`` column (the official script crashes). Label ids in ``1..max(gt)`` that
are absent from the GT are skipped with a warning and a ``note`` (the official script returns NaN
for the case, or counts the label as 0 when the prediction has it).

The ``modality`` column is the canonical name from :func:`router.modality.parse_case_name` (the
project's one case-name parser: ``X-Ray`` -> ``XRay``, an unknown token -> ``Unknown:<token>``), or
``unknown`` for a file name that is not ``2DBox_``/``3DBox_``.

Outputs: per-case CSV (``case, modality, shape, DSC, NSD, status, note``), ``<stem>_per_modality.csv``
(n, mean and std of DSC and NSD), ``<stem>_summary.json``, the per-modality table on stdout, and
optionally plots (``--plots``, :mod:`evaluation.plots`) and NIfTI exports of the 3D cases
(``--save-nii``, :mod:`evaluation.nifti`); both modules are imported only when their option is given.

Usage::

    python evaluation/compute_metrics.py -s SEGS -g GTS -o metrics.csv
    python -m evaluation.compute_metrics -s SEGS -g GTS --spacing-order zyx --plots plots \\
        --efficiency SEGS/efficiency.csv --images IMGS --save-nii nii

Importable API: :func:`score_case`, :func:`evaluate`, :func:`summarize`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# surface-distance 0.1 (the release on PyPI) still uses np.Inf / np.NaN, which NumPy 2 removed.
# Restore the aliases before importing it, and only where they are missing.
for _alias, _value in (("Inf", np.inf), ("NaN", np.nan)):
    if not hasattr(np, _alias):
        setattr(np, _alias, _value)

from surface_distance import (  # noqa: E402 (must follow the NumPy alias shim above)
    compute_dice_coefficient,
    compute_surface_dice_at_tolerance,
    compute_surface_distances,
)
from tqdm import tqdm  # noqa: E402

from evaluation.common import NOT_SCORED, READ_ERRORS, log  # noqa: E402
from router.modality import CaseNameError, parse_case_name  # noqa: E402 (importable as a script: build.sh installs the project)

SPACING_ORDERS = ("official", "zyx")
DSC_THRESHOLD_FOR_NSD = 0.2  # challenge rule: NSD only where the case mean DSC is above this
CSV_COLUMNS = ("case", "modality", "shape", "DSC", "NSD", "status", "note")


@contextmanager
def _quiet_scipy_namespaces() -> Iterator[None]:
    """Silence only the SciPy warning about ``ndimage.filters``/``ndimage.morphology``.

    surface-distance 0.1 calls these deprecated namespaces on every call; the warning is not ours to fix.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*scipy\.ndimage.* namespace", category=DeprecationWarning)
        yield


def nsd_spacing(stored: Sequence[float] | None, ndim: int, order: str = "official") -> tuple[float, ...]:
    """Spacing (mm) per array axis to pass to :func:`score_case`.

    Args:
        stored: the GT file's ``spacing``, SimpleITK order ``(x, y, z)``; ignored for 2D.
        ndim: 2 or 3, the number of axes of the label map.
        order: ``official`` (stored order, as the challenge) or ``zyx`` (reversed to the array axes).

    Returns:
        ``(1.0, 1.0)`` for 2D; 3 floats for 3D.
    """
    if order not in SPACING_ORDERS:
        raise ValueError(f"spacing order must be one of {SPACING_ORDERS}, got {order!r}")
    if ndim == 2:
        return (1.0, 1.0)
    if stored is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in np.asarray(stored).ravel())
    if len(values) != 3:
        raise ValueError(f"3D spacing must have 3 values, got {values}")
    return values[::-1] if order == "zyx" else values


def _as_3d(mask: np.ndarray, spacing: Sequence[float] | None) -> tuple[np.ndarray, tuple[float, ...]]:
    """2D masks get a trailing axis and a spacing of 1 on it, as the official evaluator does."""
    if mask.ndim == 2:
        in_plane = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)[:2]
        return mask[..., None], (*in_plane, 1.0)
    if spacing is None:
        raise ValueError("3D masks need a spacing")
    return mask, tuple(float(s) for s in spacing)


def gt_labels(gt: np.ndarray) -> tuple[list[int], list[int]]:
    """Split the challenge's label ids ``1..max(gt)`` into (present in gt, absent from gt)."""
    top = int(gt.max()) if gt.size else 0  # int(): uint8 255 + 1 would wrap under NumPy 2
    present = set(np.unique(gt).tolist())
    wanted = range(1, top + 1)
    return [i for i in wanted if i in present], [i for i in wanted if i not in present]


def per_label_dsc(seg: np.ndarray, gt: np.ndarray, labels: Sequence[int]) -> list[float]:
    """DSC of each label, via ``surface_distance.compute_dice_coefficient``.

    Args:
        seg, gt: label maps of the same shape, ``(H, W)`` or ``(D, H, W)``.
        labels: label ids to score.
    """
    return [float(compute_dice_coefficient(gt == i, seg == i)) for i in labels]


def per_label_nsd(
    seg: np.ndarray,
    gt: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] | None,
    tolerance: float = 2.0,
) -> list[float]:
    """Raw NSD (surface Dice at ``tolerance`` mm) of each label, without the 0.2 DSC rule.

    Args:
        seg, gt: label maps ``(H, W)`` or ``(D, H, W)``; 2D ones are scored as ``(H, W, 1)``.
        labels: label ids to score.
        spacing: mm per array axis (3 values for 3D; ``None`` or 2 values for 2D).
        tolerance: tolerance in mm.
    """
    gt3, spacing3 = _as_3d(gt, spacing)
    seg3, _ = _as_3d(seg, spacing)
    out = []
    with _quiet_scipy_namespaces():
        for i in labels:
            distances = compute_surface_distances(gt3 == i, seg3 == i, spacing_mm=spacing3)
            out.append(float(compute_surface_dice_at_tolerance(distances, tolerance)))
    return out


def score_case(
    seg: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None,
    tolerance: float = 2.0,
    warn: bool = True,
) -> tuple[float, float, list[str]]:
    """Score one case by the challenge's rules.

    Args:
        seg: predicted label map, ``(H, W)`` or ``(D, H, W)``.
        gt: ground-truth label map, same shape.
        spacing: mm per *array axis*, used as given (see :func:`nsd_spacing` for the order);
            2D: ``None`` or 2 values, a trailing axis of spacing 1 is added as the official evaluator does.
        tolerance: NSD tolerance in mm.
        warn: also emit the notes as ``UserWarning`` (the batch runner logs them instead).

    Returns:
        ``(dsc, nsd, notes)``: means over the labels present in the GT; both NaN if the GT is empty.

    Raises:
        ValueError: shapes differ, or the maps are neither 2D nor 3D.
    """
    if seg.shape != gt.shape:
        raise ValueError(f"shape mismatch: seg {seg.shape} vs gt {gt.shape}")
    if gt.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {gt.shape}")
    labels, absent = gt_labels(gt)
    notes = []
    if absent:
        notes.append(f"labels {absent} absent from GT, skipped")
    if not labels:
        notes.append("GT has no foreground")
        dsc, nsd = math.nan, math.nan
    else:
        dsc = float(np.mean(per_label_dsc(seg, gt, labels)))
        if dsc > DSC_THRESHOLD_FOR_NSD:
            nsd = float(np.mean(per_label_nsd(seg, gt, labels, spacing, tolerance)))
        else:
            nsd = 0.0
            notes.append(f"mean DSC <= {DSC_THRESHOLD_FOR_NSD}: NSD set to 0 (challenge rule)")
    if warn:
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)
    return dsc, nsd, notes


def _modality(case: str) -> str:
    """Canonical modality of a case file name (router's parser); ``unknown`` for a non-challenge name."""
    try:
        return parse_case_name(case)[1]
    except CaseNameError:
        return "unknown"


def _row(
    case: str, shape: Sequence[int] | None, dsc: float, nsd: float, status: str, notes: Sequence[str]
) -> dict:
    return {
        "case": case,
        "modality": _modality(case),
        "shape": "x".join(str(int(s)) for s in shape) if shape is not None else "",
        "DSC": dsc,
        "NSD": nsd,
        "status": status,
        "note": "; ".join(notes),
    }


def _load_key(path: Path, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as npz:
        if key not in npz.files:
            raise KeyError(key)
        return npz[key], (npz["spacing"] if "spacing" in npz.files else None)


def score_file(gt_path: Path, seg_path: Path, spacing_order: str = "official", tolerance: float = 2.0) -> dict:
    """Score one GT file against its prediction file; never raises for a bad prediction.

    Returns:
        A row dict with the keys of :data:`CSV_COLUMNS`.
    """
    case = gt_path.name
    try:
        gt, stored_spacing = _load_key(gt_path, "gts")
    except (*READ_ERRORS, KeyError) as exc:  # a broken GT is reported, not fatal for the whole run
        return _row(case, None, math.nan, math.nan, "gt_unreadable", [f"{type(exc).__name__}: {exc}"])
    notes = []
    if gt.ndim == 3 and stored_spacing is None:
        notes.append("no spacing in GT, used (1, 1, 1)")
    try:
        spacing = nsd_spacing(stored_spacing, gt.ndim, spacing_order)
    except ValueError as exc:  # e.g. a spacing without 3 values: this case only
        return _row(case, gt.shape, math.nan, math.nan, "gt_unreadable", [*notes, f"bad spacing: {exc}"])

    def failed(status: str, why: str) -> dict:
        return _row(case, gt.shape, 0.0, 0.0, status, [*notes, why])

    if not seg_path.is_file():
        return failed("missing", "no prediction file")
    try:
        seg, _ = _load_key(seg_path, "segs")
    except KeyError:
        return failed("no_segs_key", "prediction has no 'segs' key")
    except READ_ERRORS as exc:
        return failed("unreadable", f"{type(exc).__name__}: {exc}")
    if seg.shape != gt.shape:
        return failed("wrong_shape", f"segs shape {seg.shape} != gts shape {gt.shape}")
    try:
        dsc, nsd, case_notes = score_case(seg, gt, spacing, tolerance, warn=False)
    except Exception as exc:  # noqa: BLE001  (one odd case must not abort a run of hundreds)
        return failed("error", f"{type(exc).__name__}: {exc}")
    status = "empty_gt" if math.isnan(dsc) else "ok"
    return _row(case, gt.shape, dsc, nsd, status, [*notes, *case_notes])


def _score_task(args: tuple[str, str, str, float]) -> dict:
    gt_path, seg_path, order, tolerance = args
    return score_file(Path(gt_path), Path(seg_path), order, tolerance)


def evaluate(
    segs_dir: str | Path,
    gts_dir: str | Path,
    spacing_order: str = "official",
    tolerance: float = 2.0,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Score every ``*.npz`` of ``gts_dir`` against the same name in ``segs_dir``.

    Args:
        segs_dir: folder of predictions (key ``segs``).
        gts_dir: folder of ground truth (keys ``gts``, and ``spacing`` for 3D).
        spacing_order: ``official`` or ``zyx`` (module docstring).
        tolerance: NSD tolerance in mm.
        workers: processes; ``None`` = CPU count, ``<= 1`` = in this process.
        progress: show a tqdm bar on stderr.

    Returns:
        One row dict per case (keys of :data:`CSV_COLUMNS`), sorted by case name.
    """
    if spacing_order not in SPACING_ORDERS:
        raise ValueError(f"spacing order must be one of {SPACING_ORDERS}, got {spacing_order!r}")
    segs_dir, gts_dir = Path(segs_dir), Path(gts_dir)
    gt_files = sorted(gts_dir.glob("*.npz"))
    extra = sorted({p.name for p in segs_dir.glob("*.npz")} - {p.name for p in gt_files})
    if extra:
        log.warning("%d prediction(s) without GT ignored: %s", len(extra), ", ".join(extra[:5]))
    tasks = [(str(p), str(segs_dir / p.name), spacing_order, float(tolerance)) for p in gt_files]
    workers = (os.cpu_count() or 1) if workers is None else workers
    rows = []
    # disable=None: a bar on a terminal only, as in predict.py, so logs hold no redraws
    disable = None if progress else True
    with tqdm(total=len(tasks), desc="scoring", unit="case", disable=disable, file=sys.stderr) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                rows.append(_score_task(task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                for future in as_completed([pool.submit(_score_task, t) for t in tasks]):
                    rows.append(future.result())
                    bar.update()
    rows.sort(key=lambda r: r["case"])
    for r in rows:  # the workers do not warn: log here, once, after the bar is gone
        if r["status"] != "ok" or "absent" in r["note"]:
            log.warning("%s [%s]: %s", r["case"], r["status"], r["note"])
        elif r["note"]:
            log.info("%s: %s", r["case"], r["note"])
    return rows


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, so one case gives std 0, not NaN)."""
    arr = np.asarray(values, dtype=float)
    return (float(arr.mean()), float(arr.std())) if arr.size else (math.nan, math.nan)


def summarize(rows: Sequence[dict]) -> dict[str, Any]:
    """Aggregate case rows: per modality and overall (cases with an unusable GT are left out).

    Returns:
        ``{"overall": {...}, "per_modality": {modality: {n, DSC_mean, DSC_std, NSD_mean, NSD_std}},
        "status_counts": {...}, "n_cases": int}``.
    """
    scored = [r for r in rows if r["status"] not in NOT_SCORED]
    per_modality = {}
    for modality in sorted({r["modality"] for r in scored}):
        group = [r for r in scored if r["modality"] == modality]
        dsc_mean, dsc_std = _stats([r["DSC"] for r in group])
        nsd_mean, nsd_std = _stats([r["NSD"] for r in group])
        per_modality[modality] = {
            "n": len(group), "DSC_mean": dsc_mean, "DSC_std": dsc_std, "NSD_mean": nsd_mean, "NSD_std": nsd_std,
        }
    dsc_mean, dsc_std = _stats([r["DSC"] for r in scored])
    nsd_mean, nsd_std = _stats([r["NSD"] for r in scored])
    status_counts: dict[str, int] = {}
    for r in rows:
        status_counts[r["status"]] = status_counts.get(r["status"], 0) + 1
    overall = {
        "n": len(scored), "DSC_mean": dsc_mean, "DSC_std": dsc_std, "NSD_mean": nsd_mean, "NSD_std": nsd_std,
        # the mean of the modality means weighs rare modalities as much as common ones
        "DSC_mean_of_modalities": _stats([m["DSC_mean"] for m in per_modality.values()])[0],
        "NSD_mean_of_modalities": _stats([m["NSD_mean"] for m in per_modality.values()])[0],
    }
    return {"overall": overall, "per_modality": per_modality, "status_counts": status_counts, "n_cases": len(rows)}


def format_table(summary: dict[str, Any]) -> str:
    """Per-modality table (plus an overall line) as fixed-width text."""
    lines = [f"{'modality':<14}{'n':>4}{'DSC mean':>10}{'DSC std':>9}{'NSD mean':>10}{'NSD std':>9}"]
    items = [*summary["per_modality"].items(), ("ALL", summary["overall"])]
    for name, m in items:
        lines.append(
            f"{name:<14}{m['n']:>4}{m['DSC_mean']:>10.4f}{m['DSC_std']:>9.4f}{m['NSD_mean']:>10.4f}{m['NSD_std']:>9.4f}"
        )
    return "\n".join(lines)


def _fmt(value: Any) -> Any:
    return f"{value:.6f}" if isinstance(value, float) else value


def write_outputs(rows: Sequence[dict], summary: dict[str, Any], out_csv: Path, settings: dict) -> list[Path]:
    """Write the per-case CSV, ``<stem>_per_modality.csv`` and ``<stem>_summary.json``; return their paths."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    extra_cols = [c for c in ("seconds",) if any(c in r for r in rows)]
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*CSV_COLUMNS, *extra_cols], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
    per_mod_csv = out_csv.with_name(f"{out_csv.stem}_per_modality.csv")
    with per_mod_csv.open("w", newline="") as f:
        cols = ["modality", "n", "DSC_mean", "DSC_std", "NSD_mean", "NSD_std"]
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for name, m in [*summary["per_modality"].items(), ("ALL", summary["overall"])]:
            writer.writerow({"modality": name, **{k: _fmt(v) for k, v in m.items()}})
    json_path = out_csv.with_name(f"{out_csv.stem}_summary.json")
    payload = {"settings": settings, **summary}
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return [out_csv, per_mod_csv, json_path]


def read_runtimes(path: str | Path) -> dict[str, float]:
    """Read a running-time CSV: ``case,seconds`` (our predict.py), ``case,runtime``, or the
    challenge's ``CaseName,RunningTime``. Keys are case names without ``.npz``."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        case_col = next((fields[c] for c in ("case", "casename") if c in fields), None)
        time_col = next((fields[c] for c in ("seconds", "runtime", "runningtime") if c in fields), None)
        if case_col is None or time_col is None:
            raise ValueError(f"{path}: need a case column and a seconds/runtime column, got {reader.fieldnames}")
        return {row[case_col].strip().removesuffix(".npz"): float(row[time_col]) for row in reader}


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="compute_metrics",
        description="DSC and NSD per case, per modality and overall, by the CVPR24 MedSAM-on-Laptop rules "
        "(labels 1..max(gt), NSD only where the case mean DSC > 0.2, 2D scored as (H, W, 1) with spacing 1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-s", "--segs", type=Path, required=True, help="folder of predictions (.npz, key 'segs')")
    parser.add_argument("-g", "--gts", type=Path, required=True, help="folder of ground truth (.npz, 'gts', 'spacing')")
    parser.add_argument("-o", "--out", type=Path, default=Path("metrics.csv"),
                        help="per-case CSV; <stem>_per_modality.csv and <stem>_summary.json go beside it")
    parser.add_argument("--spacing-order", choices=SPACING_ORDERS, default="official",
                        help="3D NSD spacing: 'official' passes the stored (x,y,z) spacing as is to (z,y,x) arrays, "
                        "like the challenge's evaluator (leaderboard numbers); 'zyx' reverses it to match the axes "
                        "(physically right)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (1 = no pool)")
    parser.add_argument("--plots", type=Path,
                        help="folder for PNG plots (per-modality bars, runtime scatter, overlays)")
    parser.add_argument("--efficiency", type=Path,
                        help="running-time CSV: 'case,seconds' (predict.py), 'case,runtime' or 'CaseName,RunningTime'")
    parser.add_argument("--images", type=Path,
                        help="input .npz folder ('imgs', 'boxes'): overlays of each modality's worst case, "
                        "NIfTI images")
    parser.add_argument("--save-nii", type=Path,
                        help="folder for NIfTI (.nii.gz) image/GT/prediction of the 3D cases")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if not args.gts.is_dir() or not any(args.gts.glob("*.npz")):
        log.error("no .npz ground truth in %s", args.gts)
        return 2
    rows = evaluate(args.segs, args.gts, args.spacing_order, args.tolerance, args.workers, not args.no_progress)
    if args.efficiency is not None:
        runtimes = read_runtimes(args.efficiency)
        for r in rows:
            seconds = runtimes.get(Path(r["case"]).stem)
            if seconds is not None:
                r["seconds"] = seconds
        log.info("running times matched for %d of %d cases", sum("seconds" in r for r in rows), len(rows))
    summary = summarize(rows)
    settings = {
        "segs": str(args.segs), "gts": str(args.gts), "spacing_order": args.spacing_order,
        "tolerance_mm": args.tolerance, "nsd_rule": f"case mean DSC > {DSC_THRESHOLD_FOR_NSD}",
    }
    for path in write_outputs(rows, summary, args.out, settings):
        log.info("wrote %s", path)
    print(format_table(summary))
    if args.plots is not None:
        from evaluation.plots import make_plots  # matplotlib only when plots are asked for

        for path in make_plots(rows, summary, args.plots, args.segs, args.gts, args.images):
            log.info("wrote %s", path)
    if args.save_nii is not None:
        from evaluation.nifti import save_nifti  # SimpleITK only when NIfTI files are asked for

        written = save_nifti(rows, args.segs, args.gts, args.save_nii, args.images)
        log.info("wrote %d NIfTI file(s) to %s", len(written), args.save_nii)
    return 0


if __name__ == "__main__":
    sys.exit(main())
