"""Per structure, on cases with many boxes: DSC segmented alone (a case with that box only), in the scan with
one routing table ("before") and in the scan with another ("after"): what painting the label map costs.

    python -m benchmarks.overlap --cases ../shared/data/dev-fullfov --before /tmp/later_box.toml \
        --store /tmp/embeddings --out /tmp/overlap.csv

`--cases DIR[:GLOB,...]`: DIR holds imgs/ and gts/ (the dev sets' layout). `--before`/`--after`: routing tables
(after: router/routes.toml by default); "alone" runs with the after table. `--store`: encoder outputs shared
across the runs (benchmarks.study.StoredEmbeddingPredictor), so each slice is encoded once: seconds are not
reported here. Prints one row per structure and, per case and modality, the mean DSC of each column and how
much of the loss from alone to before the after table wins back (over the structures where before < alone).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.study import Variant, VariantRunner, parse_case_set
from evaluation.compute_metrics import per_label_dsc
from models.registry import model_dir
from router.modality import parse_case_name

COLUMNS = ("case", "modality", "label", "alone", "before", "after")


def one_box_case(path: Path, index: int, folder: Path) -> Path:
    """A copy of the case at `path` with only box `index`, in `folder` (its name keeps the modality)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["boxes"] = arrays["boxes"][index : index + 1]
    out = folder / f"{path.stem}b{index + 1}.npz"
    np.savez_compressed(out, **arrays)
    return out


def structure_rows(case: Path, gt_path: Path, before: VariantRunner, after: VariantRunner,
                   scratch: Path) -> list[dict[str, Any]]:
    """One row per box of `case`: DSC alone, in the scan with `before`, in the scan with `after`."""
    with np.load(gt_path, allow_pickle=False) as npz:
        gt = npz["gts"]
    labels = list(range(1, int(gt.max()) + 1))
    in_scan = {name: per_label_dsc(runner.run(case)[0], gt, labels)
               for name, runner in (("before", before), ("after", after))}
    rows = []
    for label in labels:
        alone_segs = after.run(one_box_case(case, label - 1, scratch))[0]
        rows.append({"case": case.stem, "modality": parse_case_name(case.name)[1], "label": label,
                     "alone": per_label_dsc(alone_segs, (gt == label).astype(np.uint8), [1])[0],
                     "before": in_scan["before"][label - 1], "after": in_scan["after"][label - 1]})
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> str:
    """Per case and per modality: mean alone / before / after, and the share of the alone-to-before loss won back."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row["case"])].append(row)
        groups[f"all {row['modality']}"].append(row)
    lines = [f"{'':40s} {'n':>3s} {'alone':>6s} {'before':>6s} {'after':>6s}  lost (n)  won back"]
    for name, group in groups.items():
        mean = {key: float(np.mean([r[key] for r in group])) for key in ("alone", "before", "after")}
        lost = [r for r in group if r["before"] < r["alone"]]
        loss = sum(r["alone"] - r["before"] for r in lost)
        gain = sum(r["after"] - r["before"] for r in lost)
        won = f"{gain / loss:8.0%}" if loss > 0 else "       -"
        lines.append(f"{name:40s} {len(group):3d} {mean['alone']:6.3f} {mean['before']:6.3f} {mean['after']:6.3f}"
                     f"  {loss:5.3f} ({len(lost)}) {won}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", action="append", required=True, help="DIR[:GLOB,...] with imgs/ and gts/")
    parser.add_argument("--before", type=Path, required=True, help="routing table of the 'before' column")
    parser.add_argument("--after", type=Path, default=None,
                        help="routing table of 'after' and 'alone' (default: router/routes.toml)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, int8 or auto (default fp32: CPU-independent)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None, help="folder of stored encoder outputs (shared)")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the rows")
    args = parser.parse_args(argv)
    models = model_dir()
    before = VariantRunner(Variant("before", args.precision, args.before), args.threads, models, args.store)
    after = VariantRunner(Variant("after", args.precision, args.after), args.threads, models, args.store)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.cases:
            for case, gt in parse_case_set(f"set={spec}").cases():
                case_rows = structure_rows(case, gt, before, after, Path(scratch))
                for row in case_rows:
                    print(f"{row['case']:34s} {row['label']:3d} alone {row['alone']:.3f} before {row['before']:.3f} "
                          f"after {row['after']:.3f}", file=sys.stderr, flush=True)
                rows.extend(case_rows)
    if args.out:
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
