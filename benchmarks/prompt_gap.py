"""How far our 3D prompts are from the model's own ceiling, per structure: the oracle, routing tables, one 2D box.

    python -m benchmarks.prompt_gap --cases ../shared/data/dev-fullfov --variant default=router/routes.toml \
        --variant core=/tmp/core.toml --store /tmp/embeddings --one-box --out /tmp/gap.csv

Per structure (box) of every 3D case with ground truth:
- oracle: each slice of the structure prompted with the tight box of its ground truth on that slice, the
  structure alone, every slice decoded: what the model does given perfect 2D boxes, which no user has.
- one column per `--variant LABEL=TOML`: the case segmented whole (every box) with that routing table, as
  `seg-predict` does; the first variant is the reference ("today").
- with `--one-box`: the object from a single 2D box, the structure's tight box on the slice halfway along its
  z range, followed both ways until it ends (router.strategies.propagate3d.segment_from_slice, the
  interactive server's rule, with each variant's parameters), with how many slices its two ends are off and
  its encoder passes and decoder calls per box.
Per case and per modality: mean DSC of each column, encoder passes and decoder calls per case of each variant,
and the share of the gap from the reference to the oracle each other variant closes. `--store` keeps encoder
outputs (benchmarks.study.StoredEmbeddingPredictor), so every column sees the same embeddings and a slice is
encoded once across runs: DSC and counts are exact, seconds are not reported.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmarks.study import Variant, VariantRunner, parse_case_set
from evaluation.compute_metrics import per_label_dsc
from models.boxes import mask_bbox
from models.predictor import SamPredictor
from models.registry import model_dir
from router.modality import parse_case_name
from router.routing import RoutingTable
from router.strategies.propagate3d import PropagateParams, segment_from_slice


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def oracle_mask(volume: np.ndarray, truth: np.ndarray, predictor: SamPredictor) -> np.ndarray:
    """(D, H, W) bool: every slice where (D, H, W) bool `truth` has voxels, prompted with their tight box."""
    out = np.zeros(truth.shape, bool)
    for z in np.flatnonzero(truth.any(axis=(1, 2))):
        predictor.set_image(volume[z], key=("oracle", int(z)))
        out[z] = predictor.predict(mask_bbox(truth[z])[None])[0]
    return out


def middle_slice(truth: np.ndarray) -> int:
    """The slice of (D, H, W) bool `truth` nearest the middle of its z range that holds some of it."""
    slices = np.flatnonzero(truth.any(axis=(1, 2)))
    middle = (slices[0] + slices[-1]) / 2
    return int(slices[np.argmin(np.abs(slices - middle))])


def one_box_row(volume: np.ndarray, truth: np.ndarray, predictor: SamPredictor, params: PropagateParams,
                column: str) -> dict[str, Any]:
    """DSC of the object from the one 2D box on the middle slice, how far off its two ends are (slices; + where
    it stops beyond the structure's end, - where short of it), its encoder passes and decoder calls."""
    z = middle_slice(truth)
    encoder_calls, decoder_calls = predictor.encoder_calls, predictor.decoder_calls
    got = segment_from_slice(volume, mask_bbox(truth[z]), z, predictor, params, view="one-box")
    slices, found = np.flatnonzero(truth.any(axis=(1, 2))), np.flatnonzero(got.any(axis=(1, 2)))
    low_off = int(slices[0] - found[0]) if found.size else -int(z - slices[0])
    high_off = int(found[-1] - slices[-1]) if found.size else -int(slices[-1] - z)
    return {column: dice(got, truth), f"{column}_low_off": low_off, f"{column}_high_off": high_off,
            f"{column}_enc": predictor.encoder_calls - encoder_calls,
            f"{column}_dec": predictor.decoder_calls - decoder_calls}


def one_box_column(label: str, reference: bool) -> str:
    """The one-box column of variant `label`: "one_box" for the reference, "one_box LABEL" for the others."""
    return "one_box" if reference else f"one_box {label}"


def case_rows(case: Path, gt_path: Path, runners: Sequence[VariantRunner], one_box: bool) -> tuple[
        list[dict[str, Any]], dict[str, tuple[int, int]]]:
    """One row per structure of `case` and, per variant, (encoder passes, decoder calls) of the whole case."""
    with np.load(case, allow_pickle=False) as npz:
        volume = npz["imgs"]
    with np.load(gt_path, allow_pickle=False) as npz:
        gt = npz["gts"]
    labels = list(range(1, int(gt.max()) + 1))
    modality = parse_case_name(case.name)[1]
    counts: dict[str, tuple[int, int]] = {}
    scores: dict[str, list[float]] = {}
    for runner in runners:
        model = runner.table.route(3, modality, runner.pool.available).model
        predictor = runner.pool.get(model)
        decoder_calls = predictor.decoder_calls
        segs, _, encoder_calls = runner.run(case)
        counts[runner.variant.label] = (encoder_calls, predictor.decoder_calls - decoder_calls)
        scores[runner.variant.label] = per_label_dsc(segs, gt, labels)
    first = runners[0]
    predictor = first.pool.get(first.table.route(3, modality, first.pool.available).model)
    rows = []
    for label in labels:
        truth = gt == label
        predictor.reset()
        row: dict[str, Any] = {"case": case.stem, "modality": modality, "label": label,
                               "oracle": dice(oracle_mask(volume, truth, predictor), truth)}
        row.update({name: values[label - 1] for name, values in scores.items()})
        for runner in runners if one_box else ():  # each variant's one-box rule, on the same predictor
            params = cast(PropagateParams, runner.table.strategy_params(modality, "propagate"))
            predictor.reset()
            row.update(one_box_row(volume, truth, predictor, params,
                                   one_box_column(runner.variant.label, runner is first)))
        rows.append(row)
    predictor.reset()
    return rows, counts


def summarize(rows: Sequence[dict[str, Any]], counts: dict[str, dict[str, tuple[int, int]]],
              variants: Sequence[str], one_box: bool) -> str:
    """Markdown: mean DSC per structure for each case, modality and set; passes and calls; gap closed."""
    reference, others = variants[0], variants[1:]
    boxed = [one_box_column(v, v == reference) for v in variants] if one_box else []
    columns = ["oracle", *variants, *boxed]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row["case"])].append(row)
    for row in rows:
        groups[f"all {row['modality']}"].append(row)
    groups["all"] = list(rows)
    header = ["case", "n", *columns, *(f"{v} gap closed" for v in others), *(f"{v} enc / dec" for v in variants),
              *(f"{c} enc / dec per box" for c in boxed)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, group in groups.items():
        mean = {c: float(np.mean([r[c] for r in group])) for c in columns}
        cells = [name, str(len(group)), *(f"{mean[c]:.3f}" for c in columns)]
        gap = mean["oracle"] - mean[reference]
        cells += [f"{(mean[v] - mean[reference]) / gap:.0%}" if gap > 1e-9 else "-" for v in others]
        cases = list(dict.fromkeys(str(r["case"]) for r in group))
        for v in variants:
            enc = np.mean([counts[c][v][0] for c in cases])
            dec = np.mean([counts[c][v][1] for c in cases])
            cells.append(f"{enc:.1f} / {dec:.1f}")
        for c in boxed:
            enc, dec = (np.mean([r[f"{c}_{count}"] for r in group]) for count in ("enc", "dec"))
            cells.append(f"{enc:.1f} / {dec:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prompt_gap", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", action="append", required=True, help="DIR[:GLOB,...] with imgs/ and gts/")
    parser.add_argument("--variant", action="append", required=True,
                        help="LABEL=ROUTES.toml; repeatable; the first is the reference")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, int8 or auto (default fp32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None, help="folder of stored encoder outputs (shared)")
    parser.add_argument("--one-box", action="store_true", help="add the one-2D-box column (segment_from_slice)")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the per-structure rows")
    args = parser.parse_args(argv)
    models = model_dir()
    variants = []
    for spec in args.variant:
        label, _, config = spec.partition("=")
        RoutingTable.load(Path(config))  # a bad table stops here, before any case runs
        variants.append(VariantRunner(Variant(label, args.precision, Path(config)), args.threads, models, args.store))
    rows: list[dict[str, Any]] = []
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for spec in args.cases:
        for case, gt in parse_case_set(f"set={spec}").cases():
            if parse_case_name(case.name)[0] != 3:
                continue
            case_result, counts[case.stem] = case_rows(case, gt, variants, args.one_box)
            for row in case_result:
                print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      file=sys.stderr, flush=True)
            rows.extend(case_result)
    if args.out and rows:
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(summarize(rows, counts, [v.variant.label for v in variants], args.one_box))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
