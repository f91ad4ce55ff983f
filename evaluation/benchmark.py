"""Speed, memory and accuracy of our OpenVINO pipeline (fp32, bf16, int8) against the PyTorch baseline.

    python -m evaluation.benchmark [--inputs DIR --gts DIR ...] [--cases GLOB] [--methods torch,fp32,bf16,int8]
                                   [--threads N] [--big-volume] [--big-image] [--quick] [--csv OUT]

Every (case, method) runs in its own fresh subprocess (`--child METHOD CASE`), so peak RSS is per case
and per method and nothing is warm from a previous case, as in the challenge's one-container-per-case
timing. The child prints one JSON line; the parent collects the lines and prints tables and summaries.

Methods: `torch` = evaluation.baseline_torch.TorchBaseline (the official procedure: per box, no cache);
`fp32`, `bf16`, `int8` = router.pipeline.segment_case with the routing table's route, ModelPool(precision=).

Times: `load` = heavy imports + model load/compile; `s` = the case only (reading the .npz included,
writing the output excluded). Peak RSS is read before scoring, so DSC/NSD cost no memory in the figures.
Prints figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.hardware import cpu_budget, cpu_flags
from models.registry import FALLBACK_MODEL, MODELS, get_spec, is_available, model_dir
from router.modality import CaseNameError, parse_case_name
from router.routing import RoutingTable

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "demo"
DEV_DIR = Path("/work/shared/data/dev")
METHODS = ("torch", "fp32", "bf16", "int8")
PIPELINE_METHODS = ("fp32", "bf16", "int8")
BIG_VOLUME_NAME = "3DBox_CT_bigvolume"
BIG_IMAGE_NAME = "2DBox_Microscopy_bigimage"
BIG_VOLUME_RSS_TARGET_MIB = 2048
CSV_COLUMNS = ("case", "group", "modality", "method", "model", "route", "status", "seconds", "load_seconds",
               "speedup_vs_torch", "encoder_calls", "encoder_ms", "rss_mib", "dsc", "nsd")


# ------------------------------------------------------------------------------------------- child side


def _score(segs: np.ndarray, gt_path: Path) -> tuple[float, float, str]:
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
        from evaluation.baseline_torch import TorchBaseline

        baseline = TorchBaseline(threads)
        encoder_seconds = [0.0]
        embed = baseline.embed

        def timed_embed(image: np.ndarray):  # the baseline has no encoder timer: time its embed() calls
            began = time.perf_counter()
            try:
                return embed(image)
            finally:
                encoder_seconds[0] += time.perf_counter() - began

        baseline.embed = timed_embed  # type: ignore[method-assign]
        result.update(model=FALLBACK_MODEL, route="torch baseline")
        loaded = time.perf_counter()
        segs = baseline.segment_file(case_path)
        seconds = time.perf_counter() - loaded
        calls, encoder_total = baseline.encoder_calls, encoder_seconds[0]
    elif method in PIPELINE_METHODS:
        from router.casefile import read_case
        from router.pipeline import ModelPool, segment_case

        pool = ModelPool(models or model_dir(), threads, method)
        available = _int8_models(pool.directory) if method == "int8" else pool.available
        dim, modality = parse_case_name(case_path.name)
        route = RoutingTable.load().route(dim, modality, available)
        predictor = pool.get(route.model)  # compile now, outside the case time
        result.update(model=route.model, route=route.describe())
        loaded = time.perf_counter()
        case = read_case(case_path)
        segs = segment_case(case, route, pool)
        seconds = time.perf_counter() - loaded
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
        result["dsc"], result["nsd"], result["note"] = _score(segs, gt_path)
    return result


def encoder_gflop() -> float:
    """GFLOP of one LiteMedSAM encoder pass on a (1, 3, 256, 256) input (FlopCounterMode: 2 FLOP per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.export.litemedsam import load_litemedsam

    encoder = load_litemedsam().image_encoder
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(torch.zeros(1, 3, 256, 256))
    return counter.get_total_flops() / 1e9


ROOF_MATMUL = 4096  # M = K = N of the roof measurement: big enough to be compute-bound, 137 GFLOP


def matmul_roof(threads: int | None, repeats: int = 5) -> dict[str, float]:
    """Measured GFLOP/s of one (4096 x 4096) @ (4096 x 4096) OpenVINO MatMul, per float precision.

    The practical compute roof for our encoder's kernels on this CPU (the theoretical peaks assume
    every unit busy every cycle). bf16 only where the CPU computes it natively.
    """
    import openvino as ov
    import openvino.opset13 as ops

    from models.hardware import cpu_has_bf16
    from models.predictor import compile_config

    n = ROOF_MATMUL
    rng = np.random.default_rng(0)
    left = ops.parameter([n, n], np.float32)
    model = ov.Model([ops.matmul(left, ops.constant(rng.random((n, n), np.float32)), False, False)], [left])
    data = rng.random((n, n), np.float32)
    rates = {}
    for precision in ("fp32", "bf16") if cpu_has_bf16() else ("fp32",):
        request = ov.Core().compile_model(model, "CPU", compile_config(threads, precision)).create_infer_request()
        request.infer({0: data})
        began = time.perf_counter()
        for _ in range(repeats):
            request.infer({0: data})
        rates[precision] = 2 * n**3 * repeats / (time.perf_counter() - began) / 1e9
    return rates


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


def make_big_volume(out_dir: Path, seed: int = 0) -> Path:
    """A (100, 512, 512) uint8 CT-like volume with 6 ellipsoid organs and their tight boxes."""
    from evaluation.demo_cases import boxes_from_labels

    rng = np.random.default_rng(seed)
    shape = (100, 512, 512)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]

    def ellipsoid(centre, radii) -> np.ndarray:
        return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1

    volume = np.full(shape, 10, np.uint8)
    volume[ellipsoid((50, 256, 256), (90, 220, 240))] = 90  # body
    labels = np.zeros(shape, np.uint8)
    organs = [((45, 230, 170), (18, 70, 55)), ((50, 300, 350), (12, 40, 35)), ((40, 180, 330), (10, 35, 40)),
              ((60, 330, 200), (14, 30, 30)), ((30, 260, 260), (8, 20, 20)), ((70, 200, 250), (10, 25, 45))]
    for label, (centre, radii) in enumerate(organs, start=1):
        inside = ellipsoid(centre, radii)
        volume[inside] = 120 + 20 * label
        labels[inside] = label
    volume = np.clip(volume.astype(np.int16) + rng.integers(-8, 9, shape, dtype=np.int16), 0, 255).astype(np.uint8)
    path = out_dir / f"{BIG_VOLUME_NAME}.npz"
    np.savez(path, imgs=volume, boxes=boxes_from_labels(labels), spacing=np.array([0.8, 0.8, 2.5]))
    return path


def make_big_image(out_dir: Path, seed: int = 0, size: int = 2048, objects: int = 300) -> tuple[Path, Path]:
    """A (size, size, 3) uint8 microscopy-like image with `objects` textured discs: (case, ground truth).

    Every disc that stays visible gets its tight box; labels follow box order, and later discs cover
    earlier ones, as the output's "later boxes win" rule does.
    """
    from evaluation.demo_cases import boxes_from_labels

    rng = np.random.default_rng(seed)
    image = rng.integers(10, 40, (size, size), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint16)
    y, x = np.ogrid[:size, :size]
    for label in range(1, objects + 1):
        cy, cx = rng.integers(40, size - 40, 2)
        radius = int(rng.integers(8, 30))
        window = (slice(cy - radius, cy + radius + 1), slice(cx - radius, cx + radius + 1))
        disc = (y[window[0]] - cy) ** 2 + (x[:, window[1]] - cx) ** 2 <= radius**2
        image[window][disc] = rng.integers(120, 230)
        labels[window][disc] = label
    # drop labels that later discs covered completely, keep the rest in order
    kept = np.unique(labels[labels > 0])
    relabel = np.zeros(objects + 1, np.uint16)
    relabel[kept] = np.arange(1, kept.size + 1)
    labels = relabel[labels]
    image = np.repeat(image[:, :, None], 3, axis=2)
    (out_dir / "big_gts").mkdir(exist_ok=True)
    case, gt = out_dir / f"{BIG_IMAGE_NAME}.npz", out_dir / "big_gts" / f"{BIG_IMAGE_NAME}.npz"
    boxes = boxes_from_labels(labels)
    np.savez(case, imgs=image, boxes=boxes)
    np.savez(gt, gts=labels, boxes=boxes)
    return case, gt


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
    command = [sys.executable, "-m", "evaluation.benchmark", "--child", method, str(case), "--models", str(models)]
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


def _group(case: str) -> str:
    if case in (BIG_VOLUME_NAME, BIG_IMAGE_NAME):
        return "big"
    return "2D" if case.startswith("2D") else "3D"


def _modality(case: str) -> str:
    try:
        return parse_case_name(case)[1]
    except CaseNameError:
        return "unknown"


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_torch = torch seconds / method seconds, for cases where both ran."""
    torch_seconds = {r["case"]: r["seconds"] for r in rows if r["method"] == "torch" and r.get("seconds")}
    for r in rows:
        base = torch_seconds.get(r["case"])
        r["speedup_vs_torch"] = base / r["seconds"] if base and r.get("seconds") else None


def _num(value: Any, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


# (title, key, format, width) of the columns of each method group
SPEED_COLUMNS = (("s", "seconds", ".2f", 8), ("load", "load_seconds", ".1f", 6), ("x", "speedup_vs_torch", ".1f", 6),
                 ("enc", "encoder_calls", "d", 5), ("ms/enc", "encoder_ms", ".0f", 7), ("MiB", "rss_mib", ".0f", 6))
ACCURACY_COLUMNS = (("DSC", "dsc", ".4f", 7), ("NSD", "nsd", ".4f", 7))


def format_table(rows: Sequence[dict[str, Any]], methods: Sequence[str],
                 columns: Sequence[tuple[str, str, str, int]]) -> str:
    """One row per case, one column group per method; a method missing for a case shows '-', a failed one ERR."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    by_key = {(r["case"], r["method"]): r for r in rows}
    name_width = max([len("case"), *(len(c) for c in cases)])
    group_width = sum(width for *_, width in columns)
    header1 = f"{'':<{name_width}}" + "".join(f" |{m:^{group_width}}" for m in methods)
    header2 = f"{'case':<{name_width}}" + "".join(
        " |" + "".join(f"{title:>{width}}" for title, _, _, width in columns) for _ in methods)
    lines = [header1, header2, "-" * len(header2)]
    for case in cases:
        cells = []
        for method in methods:
            r = by_key.get((case, method))
            if r is not None and r.get("error"):
                cells.append(f"{'ERR':^{group_width}}")
            else:
                cells.append("".join(_num(r.get(key) if r else None, spec, width) for _, key, spec, width in columns))
        lines.append(f"{case:<{name_width}}" + "".join(f" |{cell}" for cell in cells))
    return "\n".join(lines)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def format_summaries(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> str:
    """Mean speed-up on 2D and 3D cases; per-modality mean DSC per method; bf16/int8 minus fp32 DSC."""
    ok = [r for r in rows if not r.get("error")]
    lines = ["Speed-up vs torch (mean of per-case torch s / method s; total = sum torch s / sum method s):"]
    for method in [m for m in methods if m != "torch"]:
        parts = []
        for group in ("2D", "3D"):
            pairs = [r for r in ok if r["method"] == method and r["group"] == group and r.get("speedup_vs_torch")]
            if not pairs:
                parts.append(f"{group}: -")
                continue
            torch_total = sum(r["seconds"] * r["speedup_vs_torch"] for r in pairs)
            parts.append(f"{group}: mean {_mean([r['speedup_vs_torch'] for r in pairs]):.1f}x, "
                         f"total {torch_total / sum(r['seconds'] for r in pairs):.1f}x (n={len(pairs)})")
        lines.append(f"  {method:<6}" + "   ".join(parts))

    scored = [r for r in ok if r.get("dsc") is not None]
    modalities = sorted({r["modality"] for r in scored})
    deltas = [m for m in ("bf16", "int8") if m in methods and "fp32" in methods]
    lines += ["", "Mean DSC per modality (n = cases with GT)" + (", and DSC minus fp32 on the same cases:" if deltas else ":")]
    lines.append(f"  {'modality':<12}" + "".join(f"{m:>14}" for m in methods) + "".join(f"{m + '-fp32':>12}" for m in deltas))
    for modality in [*modalities, "ALL"]:
        group = [r for r in scored if modality in ("ALL", r["modality"])]
        cells = []
        for method in methods:
            values = [r["dsc"] for r in group if r["method"] == method]
            cells.append(f"{_mean(values):>9.4f} (n={len(values)})" if values else f"{'-':>14}")
        fp32 = {r["case"]: r["dsc"] for r in group if r["method"] == "fp32"}
        for method in deltas:
            diffs = [r["dsc"] - fp32[r["case"]] for r in group if r["method"] == method and r["case"] in fp32]
            cells.append(f"{_mean(diffs):>+12.4f}" if diffs else f"{'-':>12}")
        lines.append(f"  {modality:<12}" + "".join(cells))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- encoder compute


def cpu_facts() -> dict[str, Any]:
    """Physical cores, MHz (and where it came from) and ISA flags, from lscpu and /proc/cpuinfo."""
    facts: dict[str, Any] = {"cores": os.cpu_count() or 1, "mhz": None, "mhz_source": "", "flags": set(), "model": ""}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    try:
        facts["cores"] = int(fields["Core(s) per socket"]) * int(fields.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        pass
    if fields.get("CPU max MHz"):
        facts["mhz"], facts["mhz_source"] = float(fields["CPU max MHz"]), "lscpu 'CPU max MHz'"
    facts["model"] = fields.get("Model name", "")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    facts["flags"] = set(cpu_flags()) or set(fields.get("Flags", "").split())
    if facts["mhz"] is None:
        mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)]
        if mhz:
            # no max MHz (e.g. under KVM): the current clock, which may be below turbo
            facts["mhz"], facts["mhz_source"] = max(mhz), "/proc/cpuinfo 'cpu MHz' (no max MHz exposed; turbo unknown)"
    return facts


def peak_rates(flags: set[str], fma_units: int) -> dict[str, tuple[float, str]]:
    """Per-core per-cycle peak by precision: {precision: (FLOP or op per cycle, what was assumed)}."""
    rates: dict[str, tuple[float, str]] = {}
    if "avx512f" in flags:
        rates["fp32"] = (16 * 2 * fma_units, f"avx512f: 16 fp32 lanes x 2 (FMA) x {fma_units} FMA units (assumed)")
    elif "avx2" in flags and "fma" in flags:
        rates["fp32"] = (8 * 2 * fma_units, f"avx2+fma: 8 fp32 lanes x 2 (FMA) x {fma_units} FMA units (assumed)")
    else:
        rates["fp32"] = (8.0, "no FMA: 4 lanes x (1 mul + 1 add) (assumed)")
    if "amx_bf16" in flags:
        rates["bf16"] = (1024.0, "amx_bf16: 1024 BF16 FLOP/cycle/core (Intel's Sapphire Rapids TMUL figure)")
    elif "avx512_bf16" in flags:
        rates["bf16"] = (64 * fma_units, f"avx512_bf16 (VDPBF16PS): 32 pairs x 2 FLOP x {fma_units} units (assumed)")
    if "amx_int8" in flags:
        rates["int8"] = (2048.0, "amx_int8: 2048 INT8 op/cycle/core (Intel's Sapphire Rapids TMUL figure)")
    elif "avx512_vnni" in flags:
        rates["int8"] = (128 * fma_units, f"avx512_vnni (VPDPBUSD): 64 products x 2 op x {fma_units} units (assumed)")
    elif "avx_vnni" in flags:
        rates["int8"] = (64 * fma_units, f"avx_vnni (256-bit VPDPBUSD): 32 products x 2 op x {fma_units} units (assumed)")
    return rates


def format_compute(rows: Sequence[dict[str, Any]], methods: Sequence[str], gflop: float | None,
                   threads: int | None, fma_units: int, roof: dict[str, float] | None = None) -> str:
    """Measured encoder GFLOP/s per method against the CPU's theoretical peaks and a measured MatMul roof."""
    roof = roof or {}
    facts = cpu_facts()
    used = min(threads or facts["cores"], facts["cores"])
    lines = ["Encoder compute (LiteMedSAM image encoder, (1,3,256,256)):"]
    if gflop is None:
        lines.append("  FLOP count unavailable (see the note above)")
        return "\n".join(lines)
    lines.append(f"  {gflop:.2f} GFLOP per slice (torch FlopCounterMode, 2 FLOP per multiply-add; conv + matmul only)")
    mhz = facts["mhz"]
    rates = peak_rates(facts["flags"], fma_units)
    lines.append(f"  CPU: {facts['model'] or 'unknown'}; {facts['cores']} physical core(s), {used} used; "
                 f"{mhz or '?'} MHz from {facts['mhz_source'] or 'nowhere'}")
    peaks = {}
    for precision, (per_cycle, assumption) in rates.items():
        peaks[precision] = used * (mhz or 0) / 1000 * per_cycle
        unit = "GOP/s" if precision == "int8" else "GFLOP/s"
        lines.append(f"  {precision} peak = {used} x {mhz or 0:.0f} MHz x {per_cycle:.0f}/cycle = {peaks[precision]:.0f} {unit}"
                     f"   [{assumption}]")
    for precision, rate in roof.items():
        share = f" = {100 * rate / peaks[precision]:.0f}% of that peak" if peaks.get(precision) else ""
        lines.append(f"  {precision} measured roof: {rate:.0f} GFLOP/s on one {ROOF_MATMUL}^3 OpenVINO MatMul{share}")
    lines.append("  measured (encoder ms per call includes resizing/normalising, so it understates the kernels):")
    for method in methods:
        mine = [r for r in rows if r["method"] == method and not r.get("error") and r.get("model") == FALLBACK_MODEL
                and r.get("encoder_calls")]
        calls = sum(r["encoder_calls"] for r in mine)
        if not calls:
            lines.append(f"    {method:<6} -")
            continue
        ms = 1000 * sum(r["encoder_seconds"] for r in mine) / calls
        rate = gflop / (ms / 1000)
        precision = method if method in peaks else "fp32"
        share = f"{100 * rate / peaks[precision]:.1f}% of the {precision} peak" if peaks.get(precision) else "peak unknown"
        if precision in roof:
            share += f", {100 * rate / roof[precision]:.0f}% of the measured roof"
        lines.append(f"    {method:<6} {ms:7.1f} ms/call over {calls} calls -> {rate:6.1f} GFLOP/s = {share}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=Path, action="append", help="folder of case .npz files (repeatable); "
                        "default: demo/inputs (made on the fly if absent) + /work/shared/data/dev/imgs if present")
    parser.add_argument("--gts", type=Path, action="append", help="folder of ground truth .npz (repeatable)")
    parser.add_argument("--cases", help="glob on the case file name, e.g. '3DBox_*'")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of torch,fp32,bf16,int8")
    parser.add_argument("--threads", type=int, default=cpu_budget(), help="threads for torch and OpenVINO")
    parser.add_argument("--models", type=Path, default=None, help="IR folder (default: $SEG_MODEL_DIR or models/ir)")
    parser.add_argument("--big-volume", action="store_true", help="add a synthetic (100, 512, 512) volume with 6 boxes")
    parser.add_argument("--big-image", action="store_true", help="add a synthetic 2048x2048 microscopy image with ~300 boxes")
    parser.add_argument("--quick", action="store_true",
                        help="demo cases only; torch only on 2D cases and the cheapest 3D case (and not on the big volume)")
    parser.add_argument("--csv", type=Path, help="write one row per (case, method) here")
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core assumed for the peak")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--gt", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def default_folders(quick: bool, scratch: Path) -> tuple[list[Path], list[Path]]:
    """Demo cases (made into `scratch` when demo/ is absent) plus the dev set when it exists."""
    demo = DEMO_DIR
    if not (demo / "inputs").is_dir():
        from evaluation.demo_cases import make_demo_cases

        demo = scratch / "demo"
        make_demo_cases(demo)
        print(f"note: {DEMO_DIR} does not exist, demo cases made in {demo}")
    inputs, gts = [demo / "inputs"], [demo / "gts"]
    if not quick and (DEV_DIR / "imgs").is_dir():
        inputs.append(DEV_DIR / "imgs")
        gts.append(DEV_DIR / "gts")
    return inputs, gts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    models = Path(args.models or model_dir())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method(s) {unknown} (known: {', '.join(METHODS)})", file=sys.stderr)
        return 2
    for method in list(methods):
        reason = method_skip_reason(method, models)
        if reason:
            print(f"note: skipping {method}: {reason}")
            methods.remove(method)

    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        if args.inputs:
            inputs, gts = args.inputs, args.gts or []
        else:
            inputs, gts = default_folders(args.quick, Path(scratch))
        cases = find_cases(inputs, gts, args.cases)
        if args.big_volume:
            cases.append((make_big_volume(Path(scratch)), None))
        if args.big_image:
            cases.append(make_big_image(Path(scratch)))
        if not cases:
            print("error: no cases found", file=sys.stderr)
            return 1
        torch_cases = {path for path, _ in cases}
        if args.quick:
            three_d = [p for p, _ in cases if p.name.startswith("3D") and _group(p.stem) != "big"]
            torch_cases = {p for p, _ in cases if p.name.startswith("2D")}
            torch_cases |= {min(three_d, key=lambda p: (case_cost(p), p.name))} if three_d else set()
            if "torch" in methods:
                print(f"note: --quick: torch only on {', '.join(sorted(p.stem for p in torch_cases)) or 'no case'}")

        flops = run_method("flops", Path("-"), None, args.threads, models)
        gflop = flops.get("gflop")
        if gflop is None:
            print(f"note: encoder FLOP count failed: {flops.get('error')}")
        roof = run_method("roof", Path("-"), None, args.threads, models).get("roof")

        rows: list[dict[str, Any]] = []
        started = time.perf_counter()
        for path, gt in cases:
            for method in methods:
                if method == "torch" and path not in torch_cases:
                    continue
                result = run_method(method, path, gt, args.threads, models)
                result.update(case=path.stem, group=_group(path.stem), modality=_modality(path.stem),
                              status="error: " + result["error"] if result.get("error") else "ok")
                rows.append(result)
                figures = result["status"] if result.get("error") else (
                    f"{result['seconds']:.2f} s (+{result['load_seconds']:.1f} s load), {result['rss_mib']:.0f} MiB")
                print(f"  [{time.perf_counter() - started:6.0f}s] {path.stem} {method}: {figures}", file=sys.stderr, flush=True)

    add_speedups(rows)
    print(f"\nthreads={args.threads}; s = case seconds, load = imports + model load/compile, x = torch s / method s, "
          "enc = encoder calls, ms/enc = ms per encoder call, MiB = peak RSS of the child process\n")
    print(format_table(rows, methods, SPEED_COLUMNS))
    print()
    print(format_table(rows, methods, ACCURACY_COLUMNS))
    for r in rows:
        if r.get("error") or r.get("note"):
            print(f"  note: {r['case']} {r['method']}: {r.get('error') or r['note']}")
    for r in rows:
        if r["method"] != "torch" and "fell back" in r.get("route", ""):
            print(f"  note: {r['case']} {r['method']}: route {r['route']}")
            break
    print()
    print(format_summaries([r for r in rows if r["group"] != "big"], methods))
    print()
    print(format_compute(rows, methods, gflop, args.threads, args.fma_units, roof))
    big = [r for r in rows if r["group"] == "big" and not r.get("error")]
    titles = {BIG_VOLUME_NAME: "Big volume (100x512x512, 6 boxes", BIG_IMAGE_NAME: "Big image (2048x2048, ~300 boxes"}
    for name, title in titles.items():
        mine = [r for r in big if r["case"] == name]
        if mine:
            print(f"\n{title}; target < {BIG_VOLUME_RSS_TARGET_MIB} MiB peak RSS):")
        for r in mine:
            verdict = "" if r["method"] == "torch" else (
                "  OK" if r["rss_mib"] < BIG_VOLUME_RSS_TARGET_MIB else "  OVER TARGET")
            dsc = f"  DSC {r['dsc']:.4f}" if r.get("dsc") is not None else ""
            print(f"  {r['method']:<6} {r['seconds']:8.1f} s  {r['rss_mib']:6.0f} MiB peak RSS{dsc}{verdict}")
    if args.csv:
        write_csv(args.csv, rows)
        print(f"\nwrote {args.csv}")
    return 1 if any(r.get("error") for r in rows) else 0


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One line per (case, method) with the figures of the tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v) for k, v in r.items()})


if __name__ == "__main__":
    sys.exit(main())
