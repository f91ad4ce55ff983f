"""What this CPU computes fast, and the inference precision that follows from it (`--precision auto`).

Measured on the LiteMedSAM encoder (ms per 256x256 slice, 2 cores). Only the first row is this AMX
machine as it is; the others are the same machine with oneDNN limited by ONEDNN_MAX_CPU_ISA, so they
show ratios, not the speed of any real CPU of that kind:

    CPU instructions               fp32   int8   bf16
    AMX (Sapphire Rapids and on)    390    215    155   -> bf16 (dev DSC equal to fp32; input layers in f32)
    AVX-512 BF16 without AMX        373    219    493   -> int8 (bf16 brgemm without AMX: slower than f32)
    AVX-512 with VNNI               386    213      -   -> int8
    AVX-512 without VNNI            387    307      -   -> int8
    AVX2 with AVX-VNNI              530    326      -   -> int8
    AVX2 without VNNI               524    671      -   -> fp32 (no int8 dot product: INT8 is slower)
"""

from __future__ import annotations

import math
import os
import re
from functools import cache
from pathlib import Path

import openvino as ov

# Any of these gives an INT8 encoder the edge over FP32 (see the table above).
INT8_FRIENDLY_FLAGS = frozenset({"amx_int8", "avx512_vnni", "avx_vnni", "avx512bw"})


@cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux, and so every Docker container); empty if unknown."""
    try:
        match = re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.MULTILINE)
    except OSError:
        return frozenset()
    return frozenset(match.group(1).split()) if match else frozenset()


def _cgroup_cpu_limit(root: Path) -> float | None:
    """CPUs allowed by a cgroup CPU quota (docker --cpus), v2 or v1; None when unlimited or unknown."""
    try:
        quota_v2, period_v2 = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "200000 100000"
        return None if quota_v2 == "max" else int(quota_v2) / int(period_v2)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def cpu_budget(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Threads worth running: the CPUs this process may use (affinity, e.g. docker --cpuset-cpus),
    capped by a CPU quota (docker --cpus), rounded up.

    os.cpu_count() sees every core of the host: under `docker run --cpus 1` on this 2-core machine,
    2 threads took 6.34 s on a 16-slice MR case against 5.54 s with 1 (14% slower; time_eval, whole
    container), and the loss grows with the host.
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit(cgroup_root)
    return max(1, min(affinity, math.ceil(limit))) if limit else max(1, affinity)


@cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX-512 BF16 or AMX); else it would emulate."""
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_precision(native_bf16: bool, flags: frozenset[str], int8_built: bool) -> str:
    """The fastest precision within the accuracy bound, per the table above.

    native_bf16: OpenVINO's BF16 capability; flags: cpu_flags(); int8_built: the INT8 encoder exists.
    Unknown flags (no /proc/cpuinfo) choose fp32 unless the BF16 capability vouches for VNNI, which
    every CPU with AVX-512 BF16 has.
    """
    if native_bf16 and "amx_bf16" in flags:
        return "bf16"
    if int8_built and (native_bf16 or flags & INT8_FRIENDLY_FLAGS):
        return "int8"
    return "fp32"
