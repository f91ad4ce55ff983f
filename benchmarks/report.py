"""What the benchmark prints and writes: per-case tables, speed-up and DSC summaries, notes, the big
cases' memory verdict and the CSV. Rows are the children's JSON dicts plus group, modality and status."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.big_cases import BIG_IMAGE_NAME, BIG_VOLUME_NAME, BIG_VOLUME_RSS_TARGET_MIB
from benchmarks.roofline import encoder_ms
from router.modality import CaseNameError, parse_case_name

# (title, key, format, width) of the columns of each method group
SPEED_COLUMNS = (("s", "seconds", ".2f", 8), ("load", "load_seconds", ".1f", 6), ("x", "speedup_vs_torch", ".1f", 6),
                 ("enc", "encoder_calls", "d", 5), ("ms/enc", "encoder_ms", ".0f", 7), ("MiB", "rss_mib", ".0f", 6))
ACCURACY_COLUMNS = (("DSC", "dsc", ".4f", 7), ("NSD", "nsd", ".4f", 7))
CSV_COLUMNS = ("case", "group", "modality", "method", "model", "route", "status", "seconds", "load_seconds",
               "speedup_vs_torch", "encoder_calls", "encoder_ms", "rss_mib", "dsc", "nsd")
BIG_TITLES = {BIG_VOLUME_NAME: "Big volume (100x512x512, 6 boxes", BIG_IMAGE_NAME: "Big image (2048x2048, ~300 boxes"}


def case_group(case: str) -> str:
    """'big' for the synthetic big cases (kept out of the summaries), else '2D' or '3D'."""
    if case in (BIG_VOLUME_NAME, BIG_IMAGE_NAME):
        return "big"
    return "2D" if case.startswith("2D") else "3D"


def case_modality(case: str) -> str:
    """The modality of a challenge case name, 'unknown' for any other name."""
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


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
    title = "Mean DSC per modality (n = cases with GT)"
    lines += ["", title + (", and DSC minus fp32 on the same cases:" if deltas else ":")]
    lines.append(f"  {'modality':<12}" + "".join(f"{m:>14}" for m in methods)
                 + "".join(f"{m + '-fp32':>12}" for m in deltas))
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


def format_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per failed or annotated row, then the first pipeline route that fell back to another model."""
    lines = [f"  note: {r['case']} {r['method']}: {r.get('error') or r['note']}"
             for r in rows if r.get("error") or r.get("note")]
    fallback = next((r for r in rows if r["method"] != "torch" and "fell back" in r.get("route", "")), None)
    if fallback is not None:
        lines.append(f"  note: {fallback['case']} {fallback['method']}: route {fallback['route']}")
    return lines


def format_big(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Seconds, peak RSS and DSC of each method on the big cases, with the memory verdict; [] without them."""
    big = [r for r in rows if r["group"] == "big" and not r.get("error")]
    lines = []
    for name, title in BIG_TITLES.items():
        mine = [r for r in big if r["case"] == name]
        if mine:
            lines += ["", f"{title}; target < {BIG_VOLUME_RSS_TARGET_MIB} MiB peak RSS):"]
        for r in mine:
            verdict = "" if r["method"] == "torch" else (
                "  OK" if r["rss_mib"] < BIG_VOLUME_RSS_TARGET_MIB else "  OVER TARGET")
            dsc = f"  DSC {r['dsc']:.4f}" if r.get("dsc") is not None else ""
            lines.append(f"  {r['method']:<6} {r['seconds']:8.1f} s  {r['rss_mib']:6.0f} MiB peak RSS{dsc}{verdict}")
    return lines


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One line per (case, method) with the figures of the tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v) for k, v in r.items()})


def format_precision_table(
    rows: Sequence[dict[str, Any]], methods: Sequence[str], models: Path | None = None
) -> str:
    """models.hardware's decision table, this CPU's row marked with what this run measured and auto's choice
    (with the recipe of the INT8 LiteMedSAM encoder in `models`, default models.registry.model_dir())."""
    from models.hardware import PRECISION_TABLE, choose_precision, cpu_class, cpu_flags, cpu_has_bf16, int8_recipe
    from models.registry import get_spec, model_dir

    native_bf16, flags = cpu_has_bf16(), cpu_flags()
    recipe = int8_recipe(Path(models or model_dir()) / get_spec("litemedsam").encoder_int8_file)
    mine = cpu_class(native_bf16, flags)
    measured = {m: ms for m in methods if (ms := encoder_ms(rows, m)[1]) is not None}
    lines = ["Precision decision table (models/hardware.py; LiteMedSAM encoder ms per slice, 2 threads):",
             f"  {'CPU class':<62}{'fp32':>6}{'int8':>6}{'bf16':>6}  source"]
    for row in PRECISION_TABLE:
        bf16 = f"{row.bf16_ms:>6.0f}" if row.bf16_ms else f"{'-':>6}"
        lines.append(f"  {row.cpu:<62}{row.fp32_ms:>6.0f}{row.int8_ms:>6.0f}{bf16}  {row.source}")
        if row is mine:
            here = " / ".join(f"{m} {ms:.0f}" for m, ms in measured.items()) or "no pipeline method ran"
            lines.append(f"  ^ this CPU; this run measured {here} ms per encoder call; auto chooses "
                         f"{choose_precision(native_bf16, flags, recipe)} (INT8 encoder: {recipe or 'not built'})")
    if mine is None:
        lines.append("  this CPU's flags are unknown: auto chooses fp32")
    return "\n".join(lines)
