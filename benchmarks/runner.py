"""Speed, memory and accuracy of our OpenVINO pipeline (fp32, bf16, int8) against the PyTorch baseline.

    python -m benchmarks [--inputs DIR --gts DIR ...] [--dev DIR] [--cases GLOB] [--methods torch,fp32,bf16,int8]
                         [--threads N] [--big-volume] [--big-image] [--quick] [--csv OUT]

Every (case, method) runs in its own fresh subprocess (`python -m benchmarks --child METHOD CASE`), so peak
RSS is per case and per method and nothing is warm from a previous case, as in the challenge's
one-container-per-case timing. The child prints one JSON line; the parent collects the lines and prints
tables and summaries (benchmarks.report).

Methods: `torch` = benchmarks.baseline_torch.TorchBaseline (the official procedure: per box, no cache);
`fp32`, `bf16`, `int8` = router.pipeline.Segmenter.segment_file with ModelPool(precision=) and the routing table.

Times: `load` = heavy imports + model load/compile; `s` = the case only (reading the .npz included,
writing the output excluded). Peak RSS is read before scoring, so DSC/NSD cost no memory in the figures.
Prints figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.big_cases import make_big_image, make_big_volume
from benchmarks.report import (
    ACCURACY_COLUMNS,
    SPEED_COLUMNS,
    add_speedups,
    case_group,
    case_modality,
    format_big,
    format_notes,
    format_precision_table,
    format_summaries,
    format_table,
    write_csv,
)
from benchmarks.roofline import encoder_gflop, format_compute, matmul_roof
from models.hardware import cpu_budget
from models.registry import FALLBACK_MODEL, MODELS, get_spec, is_available, model_dir
from router.modality import CaseNameError, parse_case_name
from router.routing import RoutingTable

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "demo"
DEFAULT_DEV_DIR = ROOT.parent / "shared" / "data" / "dev"  # the dev set beside the repository, when present
METHODS = ("torch", "fp32", "bf16", "int8")
PIPELINE_METHODS = ("fp32", "bf16", "int8")


# ------------------------------------------------------------------------------------------- child side


def score_segs(segs: np.ndarray, gt_path: Path) -> tuple[float, float, str]:
    """DSC, NSD (challenge rules, 'official' spacing order) and a note."""
    from evaluation.compute_metrics import nsd_spacing, score_case

    with np.load(gt_path, allow_pickle=False) as npz:
        gt = npz["gts"]
        spacing = npz["spacing"] if "spacing" in npz.files else None
    if gt.shape != segs.shape:
        return 0.0, 0.0, f"segs shape {segs.shape} != gts shape {gt.shape}"
    dsc, nsd, notes = score_case(segs, gt, nsd_spacing(spacing, gt.ndim), warn=False)
    return dsc, nsd, "; ".join(notes)


def _int8_models(directory: Path) -> set[str]:
    """Models with both the INT8 encoder and the (FP32) decoder exported."""
    return {name for name in MODELS if is_available(name, directory)
            and (directory / get_spec(name).encoder_int8_file).is_file()}


def run_child(method: str, case_path: Path, gt_path: Path | None, threads: int | None,
              models: Path | None = None) -> dict[str, Any]:
    """Load `method`, segment one case, and return the figures (the body of a `--child` process)."""
    start = time.perf_counter()
    result: dict[str, Any] = {"case": case_path.stem, "method": method}
    if method == "torch":
        from benchmarks.baseline_torch import TorchBaseline

        baseline = TorchBaseline(threads)
        result.update(model=FALLBACK_MODEL, route="torch baseline")
        loaded = time.perf_counter()
        segs = baseline.segment_file(case_path)
        seconds = time.perf_counter() - loaded
        calls, encoder_total = baseline.encoder_calls, baseline.encoder_seconds
    elif method in PIPELINE_METHODS:
        from models.pool import ModelPool
        from router.pipeline import Segmenter

        directory = models or model_dir()
        # int8: route only to models with an INT8 encoder
        pool = ModelPool(directory, threads, method, available=_int8_models(directory) if method == "int8" else None)
        table = RoutingTable.load()
        dim, modality = parse_case_name(case_path.name)
        pool.get(table.route(dim, modality, pool.available).model)  # compile now, outside the case time
        loaded = time.perf_counter()
        done = Segmenter(table, pool).segment_file(case_path)
        segs, seconds = done.segs, done.seconds
        predictor = pool.get(done.route.model)
        result.update(model=done.route.model, route=done.route.describe())
        calls, encoder_total = predictor.encoder_calls, predictor.encoder_seconds
    else:
        raise ValueError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    # ru_maxrss is KiB on Linux; read it before scoring so the metrics' memory is not counted
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(
        seconds=seconds, load_seconds=loaded - start, encoder_calls=calls, encoder_seconds=encoder_total,
        encoder_ms=1000 * encoder_total / calls if calls else None, rss_mib=rss_mib, dsc=None, nsd=None, note="",
    )
    if gt_path is not None:
        result["dsc"], result["nsd"], result["note"] = score_segs(segs, gt_path)
    return result


def child_main(args: argparse.Namespace) -> int:
    """`--child METHOD CASE` (or `--child flops -`, `--child roof -`): print exactly one JSON line on stdout."""
    method, case = args.child
    try:
        if method == "flops":
            result: dict[str, Any] = {"gflop": encoder_gflop()}
        elif method == "roof":
            result = {"roof": matmul_roof(args.threads)}
        else:
            result = run_child(method, Path(case), args.gt, args.threads, args.models)
    except Exception as error:  # the parent shows the reason in the table's notes
        print(json.dumps({"method": method, "case": Path(case).stem, "error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------ parent side


def case_cost(path: Path) -> int:
    """Baseline work of a 3D case: slices over all boxes (the baseline encodes each once per box)."""
    with np.load(path, allow_pickle=False) as npz:
        boxes = np.asarray(npz["boxes"]).reshape(-1, 6)
    return int(np.sum(boxes[:, 5] - boxes[:, 2] + 1))


def find_cases(inputs: Sequence[Path], gts: Sequence[Path], pattern: str | None) -> list[tuple[Path, Path | None]]:
    """(case, GT or None) for every challenge-named .npz of `inputs`; a GT is the same name in a `gts` folder."""
    found = []
    for folder in inputs:
        for path in sorted(folder.glob("*.npz")):
            if pattern and not fnmatch.fnmatch(path.name, pattern) and not fnmatch.fnmatch(path.stem, pattern):
                continue
            try:
                parse_case_name(path.name)
            except CaseNameError:
                continue
            gt = next((g / path.name for g in gts if (g / path.name).is_file()), None)
            found.append((path, gt))
    return found


def run_method(method: str, case: Path, gt: Path | None, threads: int | None, models: Path) -> dict[str, Any]:
    """One fresh child process; its JSON line, or an error row with the tail of its stderr."""
    command = [sys.executable, "-m", "benchmarks", "--child", method, str(case), "--models", str(models)]
    if threads:
        command += ["--threads", str(threads)]
    if gt is not None:
        command += ["--gt", str(gt)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    return {"case": case.stem, "method": method, "error": tail[0]}


def method_skip_reason(method: str, models: Path) -> str | None:
    """Why a method cannot run here (its IR is missing), or None."""
    if method in PIPELINE_METHODS and not is_available(FALLBACK_MODEL, models):
        return f"{FALLBACK_MODEL} IR missing in {models} (run ./build.sh export)"
    if method == "int8" and not _int8_models(models):
        return f"no *_encoder_int8.xml in {models} (run ./build.sh export)"
    return None


def default_folders(quick: bool, scratch: Path, dev: Path = DEFAULT_DEV_DIR) -> tuple[list[Path], list[Path]]:
    """Demo cases (made into `scratch` when demo/ is absent) plus the dev set (`dev`/imgs, `dev`/gts) when it exists."""
    demo = DEMO_DIR
    if not (demo / "inputs").is_dir():
        from evaluation.demo_cases import make_demo_cases

        demo = scratch / "demo"
        make_demo_cases(demo)
        print(f"note: {DEMO_DIR} does not exist, demo cases made in {demo}")
    inputs, gts = [demo / "inputs"], [demo / "gts"]
    if not quick and (dev / "imgs").is_dir():
        inputs.append(dev / "imgs")
        gts.append(dev / "gts")
    return inputs, gts


# -------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line (`--child` and `--gt` are the parent's private flags for its children)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=Path, action="append", help="folder of case .npz files (repeatable); "
                        "default: demo/inputs (made on the fly if absent) + DEV/imgs if present")
    parser.add_argument("--gts", type=Path, action="append", help="folder of ground truth .npz (repeatable)")
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV_DIR, metavar="DEV",
                        help="dev set folder with imgs/ and gts/, used without --inputs when it exists "
                        "(default: shared/data/dev beside the repository)")
    parser.add_argument("--cases", help="glob on the case file name, e.g. '3DBox_*'")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of torch,fp32,bf16,int8")
    parser.add_argument("--threads", type=int, default=cpu_budget(), help="threads for torch and OpenVINO")
    parser.add_argument("--models", type=Path, default=None, help="IR folder (default: $SEG_MODEL_DIR or models/ir)")
    parser.add_argument("--big-volume", action="store_true", help="add a synthetic (100, 512, 512) volume with 6 boxes")
    parser.add_argument("--big-image", action="store_true",
                        help="add a synthetic 2048x2048 microscopy image with ~300 boxes")
    parser.add_argument("--quick", action="store_true", help="demo cases only; torch only on 2D cases and the "
                        "cheapest 3D case (and not on the big volume)")
    parser.add_argument("--csv", type=Path, help="write one row per (case, method) here")
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core assumed for the peak")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--gt", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _usable_methods(requested: str, models: Path) -> list[str] | None:
    """The requested methods that can run here (notes for the skipped ones); None for an unknown name."""
    methods = [m.strip() for m in requested.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method(s) {unknown} (known: {', '.join(METHODS)})", file=sys.stderr)
        return None
    for method in list(methods):
        reason = method_skip_reason(method, models)
        if reason:
            print(f"note: skipping {method}: {reason}")
            methods.remove(method)
    return methods


def _torch_cases(cases: Sequence[tuple[Path, Path | None]], quick: bool, methods: Sequence[str]) -> set[Path]:
    """The cases torch runs on: all of them, or with --quick the 2D ones and the cheapest 3D one."""
    if not quick:
        return {path for path, _ in cases}
    three_d = [p for p, _ in cases if p.name.startswith("3D") and case_group(p.stem) != "big"]
    chosen = {p for p, _ in cases if p.name.startswith("2D")}
    chosen |= {min(three_d, key=lambda p: (case_cost(p), p.name))} if three_d else set()
    if "torch" in methods:
        print(f"note: --quick: torch only on {', '.join(sorted(p.stem for p in chosen)) or 'no case'}")
    return chosen


def _run_cases(cases: Sequence[tuple[Path, Path | None]], methods: Sequence[str], torch_cases: set[Path],
               threads: int | None, models: Path) -> list[dict[str, Any]]:
    """One child per (case, method), with a progress line on stderr after each."""
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for path, gt in cases:
        for method in methods:
            if method == "torch" and path not in torch_cases:
                continue
            result = run_method(method, path, gt, threads, models)
            result.update(case=path.stem, group=case_group(path.stem), modality=case_modality(path.stem),
                          status="error: " + result["error"] if result.get("error") else "ok")
            rows.append(result)
            figures = result["status"] if result.get("error") else (
                f"{result['seconds']:.2f} s (+{result['load_seconds']:.1f} s load), {result['rss_mib']:.0f} MiB")
            print(f"  [{time.perf_counter() - started:6.0f}s] {path.stem} {method}: {figures}",
                  file=sys.stderr, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with `--child`, one of its children); 1 if any child failed, 2 on a bad method."""
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    models = Path(args.models or model_dir())
    methods = _usable_methods(args.methods, models)
    if methods is None:
        return 2

    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        if args.inputs:
            inputs, gts = args.inputs, args.gts or []
        else:
            inputs, gts = default_folders(args.quick, Path(scratch), args.dev)
        cases = find_cases(inputs, gts, args.cases)
        if args.big_volume:
            cases.append((make_big_volume(Path(scratch)), None))
        if args.big_image:
            cases.append(make_big_image(Path(scratch)))
        if not cases:
            print("error: no cases found", file=sys.stderr)
            return 1
        torch_cases = _torch_cases(cases, args.quick, methods)

        flops = run_method("flops", Path("-"), None, args.threads, models)
        gflop = flops.get("gflop")
        if gflop is None:
            print(f"note: encoder FLOP count failed: {flops.get('error')}")
        roof = run_method("roof", Path("-"), None, args.threads, models).get("roof")
        rows = _run_cases(cases, methods, torch_cases, args.threads, models)

    add_speedups(rows)
    print(f"\nthreads={args.threads}; s = case seconds, load = imports + model load/compile, x = torch s / method s, "
          "enc = encoder calls, ms/enc = ms per encoder call, MiB = peak RSS of the child process\n")
    print(format_table(rows, methods, SPEED_COLUMNS))
    print()
    print(format_table(rows, methods, ACCURACY_COLUMNS))
    for line in format_notes(rows):
        print(line)
    print()
    print(format_summaries([r for r in rows if r["group"] != "big"], methods))
    print()
    print(format_compute(rows, methods, gflop, args.threads, args.fma_units, roof))
    print()
    print(format_precision_table(rows, methods, models))
    for line in format_big(rows):
        print(line)
    if args.csv:
        write_csv(args.csv, rows)
        print(f"\nwrote {args.csv}")
    return 1 if any(r.get("error") for r in rows) else 0
