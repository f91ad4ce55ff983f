"""What this CPU computes fast, and the inference precision that follows from it (`--precision auto`).

Measured on the LiteMedSAM encoder (ms per 256x256 slice, 2 cores; the non-AMX rows are this AMX
machine with oneDNN limited by ONEDNN_MAX_CPU_ISA, so they show ratios, not any real laptop's speed):

    CPU instructions           fp32   int8   bf16
    AMX / AVX-512 BF16          390    215    155   -> bf16 (dev DSC equal to fp32; input layers in f32)
    AVX-512 with VNNI           386    213      -   -> int8
    AVX-512 without VNNI        387    307      -   -> int8
    AVX2 with AVX-VNNI          530    326      -   -> int8
    AVX2 without VNNI           524    671      -   -> fp32 (no int8 dot product: INT8 is slower)
"""

from __future__ import annotations

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


@cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX-512 BF16 or AMX); else it would emulate."""
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_precision(native_bf16: bool, flags: frozenset[str], int8_built: bool) -> str:
    """The fastest precision within the accuracy bound: bf16, else int8 where it pays, else fp32.

    Unknown flags (no /proc/cpuinfo) choose fp32, which is never slower than the baseline expects.
    """
    if native_bf16:
        return "bf16"
    if int8_built and flags & INT8_FRIENDLY_FLAGS:
        return "int8"
    return "fp32"
