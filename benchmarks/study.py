"""Compare routing tables and precisions on cases with ground truth: the harness accuracy choices are made with.

    python -m benchmarks.study --cases dev=../shared/data/dev \
        --cases 'sts-choose=../shared/data/dev-sts:*STS00[7-9]*,*STS01[0-4]*' \
        --variant today=bf16 --variant old=bf16@/tmp/old_routes.toml --variant baseline=torch \
        --out /tmp/study

`--cases LABEL=DIR[:GLOB,GLOB...]`: DIR holds imgs/ and gts/ (the dev sets' layout); the globs pick cases by
file name, so one folder can give a set to choose on and a set to confirm on. `--variant LABEL=METHOD[@TOML]`:
METHOD is fp32, bf16, int8 or auto (our pipeline with that precision and the routing table TOML, default
router/routes.toml), or torch (benchmarks.baseline_torch, the official PyTorch procedure). The first variant is
the reference: every other one gets per-case wins and losses against it.

Prints, per (set, modality): cases, then for each variant mean DSC, mean NSD, seconds per case (the case alone,
compile excluded), encoder passes per case and wins/losses (a DSC change over 0.005 either way). Every row also
goes to OUT/rows.csv, and a rerun with the same OUT reuses the rows of a (variant, case) it already has, so a
long study can be stopped and extended; rows are keyed by the model files too, so a new export runs afresh.
Variants run in this one process, one after the other.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner import score_segs
from models.compiled import CompiledSam, compile_sam
from models.hardware import cpu_budget
from models.predictor import DEFAULT_CACHE_BYTES, Embedding, SamPredictor
from models.registry import PRECISIONS, ModelSpec, model_dir
from router.modality import CaseNameError, parse_case_name
from router.routing import RoutingTable

METHODS = ("torch", "auto", *PRECISIONS)
WIN_MARGIN = 0.005  # a DSC change below this is a tie: bf16 rounding alone moves cases by ~0.003
ROW_COLUMNS = ("key", "variant", "set", "case", "modality", "dsc", "nsd", "seconds", "encoder_calls", "error")


@dataclass(frozen=True)
class CaseSet:
    """Cases with ground truth: `folder`/imgs/*.npz whose name matches one of `patterns` (all without)."""

    label: str
    folder: Path
    patterns: tuple[str, ...] = ()

    def cases(self) -> list[tuple[Path, Path]]:
        """(case, ground truth) pairs, sorted by name; cases without a GT file or a challenge name are left out."""
        found = []
        for path in sorted((self.folder / "imgs").glob("*.npz")):
            if self.patterns and not any(fnmatch.fnmatch(path.name, p) for p in self.patterns):
                continue
            gt = self.folder / "gts" / path.name
            try:
                parse_case_name(path.name)
            except CaseNameError:
                continue
            if gt.is_file():
                found.append((path, gt))
        return found


@dataclass(frozen=True)
class Variant:
    """One way to segment: a method (torch or a precision) and, for our pipeline, a routing table file."""

    label: str
    method: str
    config: Path | None = None

    def key(self, models: Path) -> str:
        """Identifies what the variant computes with the IR folder `models` (method, routing table text and the
        model files it runs), so reused rows stay valid after a re-export or a new INT8 recipe."""
        text = self.config.read_text() if self.config else ""
        return f"{self.method}:{hashlib.sha256(text.encode()).hexdigest()[:12]}:{model_digest(self.method, models)}"


def model_digest(method: str, directory: Path) -> str:
    """sha256 prefix over the IR files (.xml and .bin) in `directory` that `method` may run: the INT8 encoders
    and the decoders for int8, every other IR for fp32 and bf16, all for auto; "-" for torch (PyTorch)."""
    if method == "torch":
        return "-"
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.*")):
        if path.suffix not in (".xml", ".bin"):
            continue
        if method == "auto" or "decoder" in path.name or ("int8" in path.name) == (method == "int8"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def parse_case_set(spec: str) -> CaseSet:
    """`LABEL=DIR[:GLOB,GLOB]` -> CaseSet."""
    label, sep, rest = spec.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"--cases {spec!r}: expected LABEL=DIR[:GLOB,...]")
    folder, _, globs = rest.partition(":")
    if not (Path(folder) / "imgs").is_dir():
        raise argparse.ArgumentTypeError(f"--cases {spec!r}: {folder}/imgs is not a folder")
    return CaseSet(label, Path(folder), tuple(g for g in globs.split(",") if g))


def parse_variant(spec: str) -> Variant:
    """`LABEL=METHOD[@TOML]` -> Variant; the TOML is checked by loading it."""
    label, sep, rest = spec.partition("=")
    method, _, config = rest.partition("@")
    if not sep or not label or method not in METHODS:
        raise argparse.ArgumentTypeError(f"--variant {spec!r}: expected LABEL=METHOD[@TOML], METHOD in {METHODS}")
    if config and method == "torch":
        raise argparse.ArgumentTypeError(f"--variant {spec!r}: the torch baseline takes no routing table")
    if config:
        try:
            RoutingTable.load(Path(config))
        except (OSError, ValueError) as error:
            raise argparse.ArgumentTypeError(f"--variant {spec!r}: {error}") from error
    return Variant(label, method, Path(config) if config else None)


class StoredEmbeddingPredictor(SamPredictor):
    """A SamPredictor whose encoder outputs persist in `store`, keyed by the model, precision and image bytes.

    A study that compares strategies on the same cases then encodes each slice once across all its variants
    and runs: a stored embedding is what the encoder computes (it is deterministic on one CPU), so DSC, NSD
    and encoder passes (still counted per call, as the pipeline would make them) are those of a plain run;
    seconds are not, and the study says so.
    """

    def __init__(self, model: CompiledSam, cache_bytes: int = DEFAULT_CACHE_BYTES, *, store: Path) -> None:
        super().__init__(model, cache_bytes)
        directory = model.directory or Path(".")
        self.store = store / f"{model.spec.name}-{model.precision}-{model_digest(model.precision, directory)}"
        self.store.mkdir(parents=True, exist_ok=True)

    def encode(self, image: np.ndarray) -> Embedding:
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes())
        digest.update(repr(image.shape).encode())
        path = self.store / f"{digest.hexdigest()}.npy"
        if path.is_file():
            self.encoder_calls += 1
            return Embedding(np.load(path), image.shape[:2])
        embedding = super().encode(image)
        np.save(path.with_suffix(".tmp.npy"), embedding.features)
        path.with_suffix(".tmp.npy").replace(path)
        return embedding


def predictor_maker(store: Path | None) -> Callable[..., SamPredictor]:
    """ModelPool's make_predictor: SamPredictor.compile, or with a `store` StoredEmbeddingPredictors on it."""
    if store is None:
        return SamPredictor.compile

    def compile_stored(spec: ModelSpec, directory: Path, threads: int | None, precision: str, cache_bytes: int,
                       ov_cache: Path | None = None) -> SamPredictor:
        return StoredEmbeddingPredictor(compile_sam(spec, directory, threads, precision, ov_cache=ov_cache),
                                        cache_bytes, store=store)

    return compile_stored


class VariantRunner:
    """Segments cases one way, models compiled once; `run(case)` -> (label map, seconds, encoder passes)."""

    def __init__(self, variant: Variant, threads: int, models: Path, store: Path | None = None) -> None:
        self.variant = variant
        if variant.method == "torch":
            from benchmarks.baseline_torch import TorchBaseline

            self.baseline = TorchBaseline(threads)
        else:
            from models.pool import ModelPool

            self.pool = ModelPool(models, threads, variant.method, make_predictor=predictor_maker(store))
            self.table = RoutingTable.load(variant.config)

    def run(self, path: Path) -> tuple[np.ndarray, float, int]:
        if self.variant.method == "torch":
            calls = self.baseline.encoder_calls
            start = time.perf_counter()
            segs = self.baseline.segment_file(path)
            return segs, time.perf_counter() - start, self.baseline.encoder_calls - calls
        from router.pipeline import Segmenter

        dim, modality = parse_case_name(path.name)
        predictor = self.pool.get(self.table.route(dim, modality, self.pool.available).model)  # compile untimed
        calls = predictor.encoder_calls
        done = Segmenter(self.table, self.pool).segment_file(path)
        return done.segs, done.seconds, predictor.encoder_calls - calls


def _read_rows(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {(r["key"], r["set"], r["case"]): r for r in csv.DictReader(f)}


def _append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in ROW_COLUMNS})


def run_study(sets: Sequence[CaseSet], variants: Sequence[Variant], threads: int, models: Path,
              out: Path, store: Path | None = None) -> list[dict[str, Any]]:
    """Every variant on every case of every set; rows already in `out`/rows.csv are reused, not recomputed.
    store: a folder of encoder outputs shared by all variants and runs (StoredEmbeddingPredictor)."""
    out.mkdir(parents=True, exist_ok=True)
    rows_csv = out / "rows.csv"
    done = _read_rows(rows_csv)
    rows = []
    for variant in variants:
        runner: VariantRunner | None = None
        variant_key = variant.key(models) + (":stored" if store else "")  # their seconds are not comparable
        for case_set in sets:
            for path, gt in case_set.cases():
                key = (variant_key, case_set.label, path.stem)
                if key in done:
                    rows.append({**done[key], "variant": variant.label})
                    continue
                runner = runner or VariantRunner(variant, threads, models, store)
                row: dict[str, Any] = {"key": variant_key, "variant": variant.label, "set": case_set.label,
                                       "case": path.stem, "modality": parse_case_name(path.name)[1]}
                try:
                    segs, row["seconds"], row["encoder_calls"] = runner.run(path)
                    row["dsc"], row["nsd"], _ = score_segs(segs, gt)
                except Exception as error:  # a failed case is a row too: it shows in the table
                    row["error"] = f"{type(error).__name__}: {error}"
                _append_row(rows_csv, row)
                rows.append(row)
                outcome = row.get("error") or f"DSC {row['dsc']:.4f} in {row['seconds']:.2f} s"
                print(f"  {variant.label} {case_set.label} {path.stem}: {outcome}", file=sys.stderr, flush=True)
    return rows


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def format_study(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> str:
    """Markdown table: one row per (set, modality) and per set overall, one column group per variant."""
    def num(row: dict[str, Any], key: str) -> float | None:
        value = row.get(key)
        return None if value in (None, "") or row.get("error") else float(value)

    by = {(r["variant"], r["set"], r["case"]): r for r in rows}
    sets = list(dict.fromkeys(r["set"] for r in rows))
    reference = variants[0]
    header = ["set", "modality", "n"]
    for v in variants:
        header += [f"{v} DSC", "NSD", "s/case", "enc"] + ([] if v == reference else [f"W/L vs {reference}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for set_label in sets:
        cases = list(dict.fromkeys(r["case"] for r in rows if r["set"] == set_label))
        modality_of = {r["case"]: r["modality"] for r in rows if r["set"] == set_label}
        groups = [(m, [c for c in cases if modality_of[c] == m]) for m in sorted(set(modality_of.values()))]
        for modality, group in [*groups, ("all", cases)]:
            cells = [set_label, modality, str(len(group))]
            for v in variants:
                got = [by[(v, set_label, c)] for c in group if (v, set_label, c) in by]
                for key, spec in (("dsc", ".3f"), ("nsd", ".3f"), ("seconds", ".2f"), ("encoder_calls", ".1f")):
                    values = [x for x in (num(r, key) for r in got) if x is not None]
                    failed = sum(1 for r in got if r.get("error"))
                    cells.append(f"{_mean(values):{spec}}" + (f" ({failed} failed)" if failed and key == "dsc" else ""))
                if v != reference:
                    wins = losses = 0
                    for c in group:
                        mine, ref = by.get((v, set_label, c)), by.get((reference, set_label, c))
                        a, b = (num(mine, "dsc") if mine else None), (num(ref, "dsc") if ref else None)
                        if a is not None and b is not None:
                            wins += a > b + WIN_MARGIN
                            losses += a < b - WIN_MARGIN
                    cells.append(f"{wins}/{losses}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=parse_case_set, action="append", required=True,
                        help="LABEL=DIR[:GLOB,...] (DIR has imgs/ and gts/); repeatable")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="LABEL=METHOD[@ROUTES.toml], METHOD in torch, auto, fp32, bf16, int8; repeatable; "
                             "the first is the reference")
    parser.add_argument("--out", type=Path, required=True, help="folder for rows.csv (reused rows) and study.md")
    parser.add_argument("--threads", type=int, default=cpu_budget(), help="threads for OpenVINO and torch")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="folder that keeps encoder outputs across variants and runs: a study of strategies "
                             "then encodes each slice once (its DSC and passes are exact, its seconds are not)")
    parser.add_argument("--models", type=Path, default=None, help="IR folder (default: $SEG_MODEL_DIR or models/ir)")
    args = parser.parse_args(argv)
    labels = [v.label for v in args.variant]
    if len(set(labels)) != len(labels):
        parser.error(f"variant labels must differ: {labels}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study, print its table and write it to OUT/study.md; 1 if any case failed."""
    args = parse_args(argv)
    rows = run_study(args.cases, args.variant, args.threads, Path(args.models or model_dir()), args.out,
                     args.embeddings)
    table = format_study(rows, [v.label for v in args.variant])
    variants = "; ".join(f"{v.label} = {v.method}" + (f" @ {v.config}" if v.config else "") for v in args.variant)
    text = (f"Variants: {variants}. Threads: {args.threads}. W/L: cases whose DSC is more than {WIN_MARGIN} above/"
            f"below the reference's. s/case: the case alone, compile excluded"
            f"{' (embeddings from a store: not a speed figure)' if args.embeddings else ''}; "
            f"enc: encoder passes per case.\n\n"
            f"{table}\n")
    print(text)
    (args.out / "study.md").write_text(text)
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
