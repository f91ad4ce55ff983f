"""How much of the CPU the encoder uses: its FLOPs per slice, the CPU's theoretical peaks per precision
and a measured MatMul roof, set against the encoder ms per call that the benchmark measured."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.hardware import cpu_flags
from models.registry import FALLBACK_MODEL

ROOF_MATMUL = 4096  # M = K = N of the roof measurement: big enough to be compute-bound, 137 GFLOP


def encoder_gflop() -> float:
    """GFLOP of one LiteMedSAM encoder pass on a (1, 3, 256, 256) input (FlopCounterMode: 2 FLOP per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.export.litemedsam import load_litemedsam

    encoder = load_litemedsam().image_encoder
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(torch.zeros(1, 3, 256, 256))
    return counter.get_total_flops() / 1e9


def matmul_roof(threads: int | None, repeats: int = 5) -> dict[str, float]:
    """Measured GFLOP/s of one (4096 x 4096) @ (4096 x 4096) OpenVINO MatMul, per float precision.

    The practical compute roof for our encoder's kernels on this CPU (the theoretical peaks assume
    every unit busy every cycle). bf16 only where the CPU computes it natively.
    """
    import openvino as ov
    import openvino.opset13 as ops

    from models.compiled import compile_config
    from models.hardware import cpu_has_bf16

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
            facts["mhz"] = max(mhz)
            facts["mhz_source"] = "/proc/cpuinfo 'cpu MHz' (no max MHz exposed; turbo unknown)"
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
        rates["int8"] = (64 * fma_units,
                         f"avx_vnni (256-bit VPDPBUSD): 32 products x 2 op x {fma_units} units (assumed)")
    return rates


def encoder_ms(rows: Sequence[dict[str, Any]], method: str) -> tuple[int, float | None]:
    """(LiteMedSAM encoder calls, ms per call) over `method`'s successful rows; ms None without a call."""
    mine = [r for r in rows if r["method"] == method and not r.get("error") and r.get("model") == FALLBACK_MODEL
            and r.get("encoder_calls")]
    calls = sum(r["encoder_calls"] for r in mine)
    return calls, (1000 * sum(r["encoder_seconds"] for r in mine) / calls if calls else None)


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
        lines.append(f"  {precision} peak = {used} x {mhz or 0:.0f} MHz x {per_cycle:.0f}/cycle = "
                     f"{peaks[precision]:.0f} {unit}   [{assumption}]")
    for precision, rate in roof.items():
        share = f" = {100 * rate / peaks[precision]:.0f}% of that peak" if peaks.get(precision) else ""
        lines.append(f"  {precision} measured roof: {rate:.0f} GFLOP/s on one {ROOF_MATMUL}^3 OpenVINO MatMul{share}")
    lines.append("  measured (encoder ms per call includes resizing/normalising, so it understates the kernels):")
    for method in methods:
        calls, ms = encoder_ms(rows, method)
        if ms is None:
            lines.append(f"    {method:<6} -")
            continue
        rate = gflop / (ms / 1000)
        precision = method if method in peaks else "fp32"
        if peaks.get(precision):
            share = f"{100 * rate / peaks[precision]:.1f}% of the {precision} peak"
        else:
            share = "peak unknown"
        if precision in roof:
            share += f", {100 * rate / roof[precision]:.0f}% of the measured roof"
        lines.append(f"    {method:<6} {ms:7.1f} ms/call over {calls} calls -> {rate:6.1f} GFLOP/s = {share}")
    return "\n".join(lines)
