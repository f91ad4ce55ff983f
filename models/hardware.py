"""What this CPU computes fast, and the inference precision that follows from it (`--precision auto`).

The decision table (`PRECISION_TABLE`): LiteMedSAM encoder, ms per 256x256 slice, 2 threads, and where each
figure came from. "emulated" rows are an AMX Xeon with oneDNN limited by ONEDNN_MAX_CPU_ISA: they gave ratios,
and on the classes later measured for real (Zen 4, Zen 3) they were wrong, so only real rows decide anything
beyond "has it or not" (docs/results.md, "Precision by CPU class").

Rule: bf16 wherever OpenVINO computes bf16 natively (AMX or AVX-512 BF16): fp32's accuracy (the encoder's input
layers stay f32) at the lowest real time. Elsewhere INT8 only if the recipe that made the INT8 encoder (the IR
records it) holds fp32's accuracy on validation cases (`INT8_RECIPES_WITHIN_BOUND`) and the CPU has an int8 dot
product (`int8_is_exact`); else fp32. Without a dot product the CPU's int8 arithmetic saturates, so an INT8
encoder computes something other than what its recipe was validated as, and on the one such CPU measured for
real (Zen 3) it was slower than fp32 besides.

On Arm (`ARM_TABLE`; the linux/arm64 image) the x86 flags mean nothing, and under QEMU user-mode emulation
/proc/cpuinfo even shows the host's x86 flags, so the class comes from OpenVINO's own reading of the CPU
(its FP16 capability: ARMv8.2 FP16 arithmetic). Rule: f16 only if it holds fp32's accuracy on validation
cases (`F16_WITHIN_BOUND`, measured under emulation), else fp32. No Arm speed was measured here.
"""

from __future__ import annotations

import math
import os
import platform
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import openvino as ov

# An int8 dot product: u8 x s8 products summed straight into int32, exact. Without one (AVX2, AVX-512 before
# VNNI: Zen 3, Skylake, the challenge's W-2133) oneDNN adds each pair of products into a saturating int16
# (vpmaddubsw), large activations clip, and the INT8 encoder departs from its exact value (docs/results.md).
INT8_DOT_PRODUCT_FLAGS = frozenset({"amx_int8", "avx512_vnni", "avx_vnni"})


@dataclass(frozen=True)
class PrecisionRow:
    """One CPU class of the decision table: encoder ms per slice by precision, and where they come from."""

    cpu: str
    fp32_ms: float
    int8_ms: float
    bf16_ms: float | None  # None: no native bf16 (OpenVINO would emulate it, slowly)
    source: str


REAL_AMX = "real: 2-core slice of an AMX Xeon (Sapphire Rapids), 2026-11"
REAL_ZEN4 = "real: 2-core AMD EPYC Zen 4, median of 15, 2026-12"
REAL_ZEN3 = "real: 2-core AMD EPYC Zen 3, idle, median of 11, 2026-12"
EMULATED = "emulated: the AMX Xeon under ONEDNN_MAX_CPU_ISA (ratios only)"
PRECISION_TABLE = (
    PrecisionRow("AMX (Xeon since Sapphire Rapids)", 390, 215, 155, REAL_AMX),
    PrecisionRow("AVX-512 BF16 without AMX (Zen 4, Cooper Lake)", 277, 150, 163, REAL_ZEN4),
    PrecisionRow("AVX-512 with VNNI (Cascade Lake, Ice Lake)", 386, 213, None, EMULATED),
    PrecisionRow("AVX-512 without VNNI (Skylake-SP/W: the challenge's W-2133)", 387, 307, None, EMULATED),
    PrecisionRow("AVX2 with AVX-VNNI (Alder Lake and later laptops)", 530, 326, None, EMULATED),
    PrecisionRow("AVX2 without VNNI (Zen 3 and most CPUs before 2021)", 669, 739, None, REAL_ZEN3),
)


@dataclass(frozen=True)
class ArmRow:
    """One Arm CPU class: whether OpenVINO computes f16 natively there, and where the accuracy figures come from."""

    cpu: str
    native_f16: bool
    source: str


EMULATED_ARM = "emulated: QEMU user-mode on x86 (accuracy only; speed not measured)"
ARM_TABLE = (
    ArmRow("Arm with FP16 arithmetic (ARMv8.2 FP16: Apple M-series, Graviton 2 and later, Ampere)", True, EMULATED_ARM),
    ArmRow("Arm without FP16 arithmetic (ARMv8.0: Graviton 1, Cortex-A72)", False, EMULATED_ARM),
)
ARM_MACHINES = frozenset({"aarch64", "arm64"})

# Whether f16 holds fp32's accuracy by the bound INT8 had to meet (mean DSC within 0.005 of fp32, every modality
# within 0.02) on cases not used to decide it. Under emulation it held on the six single-pass dev images it was
# decided on, and has not yet been confirmed on others (docs/results.md, "The Arm image"): fp32 until it is.
F16_WITHIN_BOUND = False

# Where an INT8 encoder IR records how it was made (Model.rt_info path): "ptq", post-training quantisation
# (models/export/quantize.py), or "qat", quantisation-aware fine-tuning (models/export/qat.py).
INT8_RECIPE_KEY = ("seg_int8", "recipe")

# The INT8 recipes that hold fp32's accuracy: mean DSC within 0.005 of fp32 and every modality within 0.02,
# on cases not used to calibrate, train or choose them, on a CPU where int8 is exact (Zen 4): "qat" does,
# "ptq" does not (docs/results.md, "Precision by CPU class"). `--precision int8` runs either.
INT8_RECIPES_WITHIN_BOUND: frozenset[str] = frozenset({"qat"})


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


def int8_is_exact(flags: frozenset[str]) -> bool:
    """Whether this CPU's int8 kernels compute an INT8 network exactly (an int8 dot product: VNNI or AMX),
    rather than through a saturating int16 sum (INT8_DOT_PRODUCT_FLAGS)."""
    return bool(flags & INT8_DOT_PRODUCT_FLAGS)


@cache
def shared_core() -> ov.Core:
    """The process's one OpenVINO Core: every new Core sets its CPU plugin up again, a cost in each
    container's start-up (docs/results.md, "Start-up and image size"). Thread-safe, as OpenVINO's Core is."""
    return ov.Core()


@cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX-512 BF16 or AMX); else it would emulate."""
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def is_arm(machine: str | None = None) -> bool:
    """Whether this process runs Arm code (natively or emulated: platform.machine() names the emulated CPU)."""
    return (machine if machine is not None else platform.machine()).lower() in ARM_MACHINES


@cache
def cpu_has_f16() -> bool:
    """Whether OpenVINO's CPU plugin computes f16 natively here (on Arm: ARMv8.2 FP16 arithmetic)."""
    return "FP16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def arm_class(native_f16: bool) -> ArmRow:
    """The row of ARM_TABLE of an Arm CPU with (or without) native f16."""
    return ARM_TABLE[0] if native_f16 else ARM_TABLE[1]


def this_arm_class() -> ArmRow | None:
    """This CPU's row of ARM_TABLE; None when this is not an Arm CPU."""
    return arm_class(cpu_has_f16()) if is_arm() else None


@cache
def cpu_name() -> str:
    """This CPU's model name as OpenVINO's CPU plugin reads it (FULL_DEVICE_NAME), for run.json."""
    return str(shared_core().get_property("CPU", "FULL_DEVICE_NAME"))


def this_cpu_class_name() -> str:
    """This CPU's class, as the decision tables name it (for run.json and the benchmarks)."""
    if (arm := this_arm_class()) is not None:
        return arm.cpu
    row = cpu_class(cpu_has_bf16(), cpu_flags())
    return row.cpu if row is not None else "unknown (no CPU flags)"


def choose_arm_precision(row: ArmRow, f16_within_bound: bool | None = None) -> str:
    """Arm's `auto`: f16 where the CPU computes it natively and f16 holds fp32's accuracy (None: as measured,
    F16_WITHIN_BOUND), else fp32."""
    within = F16_WITHIN_BOUND if f16_within_bound is None else f16_within_bound
    return "f16" if row.native_f16 and within else "fp32"


def describe_arm_choice(precision: str, row: ArmRow) -> str:
    """One line for the run's log: the precision auto chose on Arm, the class, and what was (not) measured."""
    return f"precision auto: {precision} on {row.cpu} ({row.source})"


def cpu_class(native_bf16: bool, flags: frozenset[str]) -> PrecisionRow | None:
    """The row of PRECISION_TABLE this CPU belongs to; None when its flags are unknown (no /proc/cpuinfo)."""
    if native_bf16:
        return PRECISION_TABLE[0] if "amx_bf16" in flags else PRECISION_TABLE[1]
    if not flags:
        return None
    if "avx512f" in flags:
        return PRECISION_TABLE[2] if "avx512_vnni" in flags else PRECISION_TABLE[3]
    return PRECISION_TABLE[4] if "avx_vnni" in flags else PRECISION_TABLE[5]


def int8_recipe(encoder_xml: Path) -> str | None:
    """How the INT8 encoder IR `encoder_xml` was made (INT8_RECIPE_KEY): "ptq", "qat", "unknown" for an IR
    that does not say; None when there is no such file."""
    if not encoder_xml.is_file():
        return None
    model = shared_core().read_model(encoder_xml)
    key = list(INT8_RECIPE_KEY)
    return str(model.get_rt_info(key).astype(str)) if model.has_rt_info(key) else "unknown"


def choose_precision(native_bf16: bool, flags: frozenset[str], int8_made_by: str | None,
                     recipes_within_bound: frozenset[str] = INT8_RECIPES_WITHIN_BOUND) -> str:
    """The fastest precision that keeps fp32's accuracy (module docstring).

    native_bf16: OpenVINO's BF16 capability (AMX or AVX-512 BF16); flags: cpu_flags(); int8_made_by: the
    INT8 encoder's recipe (int8_recipe), None when none is built; recipes_within_bound: the recipes that
    hold fp32's accuracy on validation cases (validated where int8 is exact, and only there does it hold).
    """
    if native_bf16:
        return "bf16"
    if int8_made_by in recipes_within_bound and int8_is_exact(flags):
        return "int8"
    return "fp32"


def describe_choice(precision: str, native_bf16: bool, flags: frozenset[str]) -> str:
    """One line for the run's log: the precision auto chose, the CPU class and the figures behind it."""
    row = cpu_class(native_bf16, flags)
    if row is None:
        return f"precision auto: {precision} (CPU flags unknown)"
    bf16 = f"{row.bf16_ms:.0f}" if row.bf16_ms else "-"
    return (f"precision auto: {precision} on {row.cpu}: encoder fp32 {row.fp32_ms:.0f} / int8 {row.int8_ms:.0f} / "
            f"bf16 {bf16} ms per slice ({row.source})")
