"""Inference precision and CPU use: the exported encoder keeps its input layers in f32 under bf16,
"auto" picks bf16 where the CPU computes bf16 natively, INT8 only where it holds fp32's accuracy, else FP32,
and the default thread count follows docker's CPU limits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from models import hardware
from models import pool as pool_module
from models.compiled import PRECISE_ATTRIBUTE, compile_config, has_precise_stem
from models.hardware import (
    ARM_TABLE,
    INT8_RECIPE_KEY,
    INT8_RECIPES_WITHIN_BOUND,
    PRECISION_TABLE,
    arm_class,
    choose_arm_precision,
    choose_precision,
    cpu_budget,
    cpu_class,
    cpu_flags,
    cpu_has_bf16,
    describe_arm_choice,
    describe_choice,
    int8_recipe,
    is_arm,
)
from models.registry import get_spec
from models.transforms import preprocess

ov = pytest.importorskip("openvino")

SPEC = get_spec("litemedsam")
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16/AMX)")


def _marked_ops(model) -> list:
    return [op for op in model.get_ordered_ops() if any(k.startswith(PRECISE_ATTRIBUTE) for k in op.get_rt_info())]


def _strip_marks(model) -> None:
    for op in _marked_ops(model):
        info = op.get_rt_info()
        for key in [k for k in info.keys() if k.startswith(PRECISE_ATTRIBUTE)]:
            del info[key]


def _exec_info(node, key: str) -> str:
    return node.get_rt_info()[key].astype(str)


def _runtime_precision(compiled, original_name: str) -> str:
    """runtimePrecision of the executed node that the original op `original_name` was fused into."""
    for node in compiled.get_runtime_model().get_ordered_ops():
        if original_name in _exec_info(node, "originalLayersNames").split(","):
            return _exec_info(node, "runtimePrecision")
    raise AssertionError(f"{original_name} is not in the executed graph")


def _low_contrast_image(seed: int = 0) -> np.ndarray:
    """A mammogram-like (384, 256) uint8 image: dark background, bright tissue with faint structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:384, :256]
    tissue = (xx - 40) ** 2 / 220**2 + (yy - 192) ** 2 / 180**2 < 1
    texture = np.cumsum(np.cumsum(rng.normal(0, 1, (384, 256)), 0), 1)
    texture = (texture - texture.min()) / np.ptp(texture)
    image = np.where(tissue, 205 + 45 * texture + 6 * np.exp(-((xx - 90) ** 2 + (yy - 200) ** 2) / 300), 8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_export_marks_only_the_encoder_input_layers(ir_dir: Path) -> None:
    model = ov.Core().read_model(ir_dir / SPEC.encoder_file)
    assert has_precise_stem(model)
    marked = _marked_ops(model)
    first_conv = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")
    assert {op.get_type_name() for op in marked} == {"Parameter", "Convolution"}
    marked_convs = [op.get_friendly_name() for op in marked if op.get_type_name() == "Convolution"]
    assert marked_convs == [first_conv.get_friendly_name()]


@needs_bf16
def test_bf16_runs_the_stem_in_f32_and_the_rest_in_bf16(ir_dir: Path) -> None:
    core = ov.Core()
    model = core.read_model(ir_dir / SPEC.encoder_file)
    stem = next(op.get_friendly_name() for op in _marked_ops(model) if op.get_type_name() == "Convolution")
    compiled = core.compile_model(model, "CPU", compile_config(None, "bf16"))
    assert _runtime_precision(compiled, stem) == "f32"
    precisions = [_exec_info(n, "runtimePrecision") for n in compiled.get_runtime_model().get_ordered_ops()
                  if _exec_info(n, "layerType") in ("Convolution", "FullyConnected")]
    assert precisions.count("bf16") > 20  # everything else does run in bf16

    _strip_marks(model)
    unmarked = core.compile_model(model, "CPU", compile_config(None, "bf16"))
    assert _runtime_precision(unmarked, stem) == "bf16"  # the mark, not some default, kept it in f32


@needs_bf16
def test_f32_stem_brings_bf16_closer_to_f32_on_a_low_contrast_image(ir_dir: Path) -> None:
    core = ov.Core()
    tensor, _ = preprocess(_low_contrast_image(), SPEC)

    def embed(model, precision: str) -> np.ndarray:
        request = core.compile_model(model, "CPU", compile_config(None, precision)).create_infer_request()
        request.infer({0: tensor})
        return request.get_output_tensor(0).data.copy()

    path = ir_dir / SPEC.encoder_file
    reference = embed(path, "fp32")
    with_stem = embed(path, "bf16")
    model = core.read_model(path)
    _strip_marks(model)
    all_bf16 = embed(model, "bf16")
    error_with_stem = np.linalg.norm(with_stem - reference) / np.linalg.norm(reference)
    error_all_bf16 = np.linalg.norm(all_bf16 - reference) / np.linalg.norm(reference)
    print(f"relative embedding error vs f32: bf16 with f32 stem {error_with_stem:.4f}, all bf16 {error_all_bf16:.4f}")
    assert error_with_stem < 0.8 * error_all_bf16, (error_with_stem, error_all_bf16)


@pytest.mark.parametrize(
    ("bf16", "flags", "recipe", "expected"),
    [
        (True, {"avx512f", "amx_bf16", "amx_int8"}, "good", "bf16"),
        (True, {"avx512_bf16", "avx512_vnni"}, "good", "bf16"),  # Zen 4: real bf16 163 ms, fp32's accuracy
        (True, set(), "bad", "bf16"),  # flags unknown, but OpenVINO vouches for native bf16
        (False, {"avx2", "avx_vnni"}, "good", "int8"),
        (False, {"avx512f", "avx512bw"}, "good", "fp32"),  # Skylake (the W-2133): int8 sums saturate there
        (False, {"avx512f", "avx512_vnni"}, "bad", "fp32"),  # INT8 outside the accuracy bound: never auto
        (False, {"avx512f", "avx512_vnni"}, "unknown", "fp32"),  # an IR that does not say how it was made
        (False, {"avx2", "fma"}, "good", "fp32"),  # Zen 3: int8 sums saturate, and INT8 is slower than FP32
        (False, {"avx512_vnni"}, None, "fp32"),  # no INT8 encoder built
        (False, set(), "good", "fp32"),  # flags unknown
    ],
)
def test_choose_precision(bf16: bool, flags: set[str], recipe: str | None, expected: str) -> None:
    assert choose_precision(bf16, frozenset(flags), recipe, frozenset({"good"})) == expected


def test_auto_uses_int8_only_if_its_recipe_holds_the_accuracy_bound() -> None:
    """The default follows the recorded validation verdict of the recipe that made the INT8 encoder."""
    vnni = frozenset({"avx512f", "avx512_vnni"})
    for recipe in ("ptq", "qat"):
        assert choose_precision(False, vnni, recipe) == ("int8" if recipe in INT8_RECIPES_WITHIN_BOUND else "fp32")
    assert "ptq" not in INT8_RECIPES_WITHIN_BOUND  # loses 0.007 DSC on held-out sarcoma volumes


@pytest.mark.parametrize(
    ("bf16", "flags", "cpu"),
    [
        (True, {"amx_bf16", "avx512_bf16"}, "AMX"),
        (True, {"avx512_bf16", "avx512f"}, "AVX-512 BF16 without AMX"),
        (False, {"avx512f", "avx512_vnni"}, "AVX-512 with VNNI"),
        (False, {"avx512f", "avx512bw"}, "AVX-512 without VNNI"),
        (False, {"avx2", "avx_vnni"}, "AVX2 with AVX-VNNI"),
        (False, {"avx2"}, "AVX2 without VNNI"),
    ],
)
def test_cpu_class_and_its_logged_figures(bf16: bool, flags: set[str], cpu: str) -> None:
    row = cpu_class(bf16, frozenset(flags))
    assert row is not None and row.cpu.startswith(cpu)
    assert (row.bf16_ms is not None) == bf16  # bf16 figures only where the CPU computes bf16 natively
    line = describe_choice(choose_precision(bf16, frozenset(flags), "ptq"), bf16, frozenset(flags))
    assert row.cpu in line and row.source in line and f"fp32 {row.fp32_ms:.0f}" in line


def test_decision_table_marks_where_each_figure_came_from() -> None:
    assert {row.source.split(":")[0] for row in PRECISION_TABLE} <= {"real", "emulated"}
    assert cpu_class(False, frozenset()) is None


def test_int8_recipe_reads_the_record_of_an_ir(tmp_path: Path) -> None:
    from openvino import opset13 as ops

    parameter = ops.parameter([1, 4], ov.Type.f32)
    model = ov.Model([ops.relu(parameter)], [parameter])
    ov.save_model(model, str(tmp_path / "plain.xml"))
    model.set_rt_info("qat", list(INT8_RECIPE_KEY))
    ov.save_model(model, str(tmp_path / "recorded.xml"))
    assert int8_recipe(tmp_path / "recorded.xml") == "qat"
    assert int8_recipe(tmp_path / "plain.xml") == "unknown"
    assert int8_recipe(tmp_path / "missing.xml") is None


def test_cpu_flags_reads_proc_cpuinfo_format(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx_vnni"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("bf16", "int8_built", "expected"),
    [(True, True, "bf16"), (False, True, "by recipe"), (False, False, "fp32")],
)
def test_model_pool_auto_precision(
    tmp_path: Path, ir_dir: Path, monkeypatch, bf16: bool, int8_built: bool, expected: str
) -> None:
    files = [SPEC.encoder_file, SPEC.decoder_file] + ([SPEC.encoder_int8_file] if int8_built else [])
    for name in files:
        for suffix in (".xml", ".bin"):
            (tmp_path / name).with_suffix(suffix).symlink_to((ir_dir / name).with_suffix(suffix))
    monkeypatch.setattr(pool_module, "cpu_has_bf16", lambda: bf16)
    monkeypatch.setattr(pool_module, "cpu_flags", lambda: frozenset({"avx512_vnni", "amx_bf16"}))
    if expected == "by recipe":  # the recipe the built IR records decides
        recipe = int8_recipe(tmp_path / SPEC.encoder_int8_file)
        assert recipe in ("ptq", "qat")
        expected = "int8" if recipe in INT8_RECIPES_WITHIN_BOUND else "fp32"
    assert pool_module.ModelPool(tmp_path).resolve_precision("litemedsam") == expected
    assert pool_module.ModelPool(tmp_path, precision="fp32").resolve_precision("litemedsam") == "fp32"


def test_model_pool_auto_runs_a_fine_tuned_int8_encoder_without_native_bf16(ir_dir: Path, monkeypatch) -> None:
    """The pool reads the recipe the INT8 IR records, once per model, and auto follows it."""
    reads: list[Path] = []

    def recorded(path: Path) -> str:
        reads.append(path)
        return "qat"

    monkeypatch.setattr(pool_module, "int8_recipe", recorded)
    monkeypatch.setattr(pool_module, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(pool_module, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw", "avx512_vnni"}))
    pool = pool_module.ModelPool(ir_dir)  # a Cascade Lake: VNNI, no bf16
    expected = "int8" if "qat" in INT8_RECIPES_WITHIN_BOUND else "fp32"
    assert pool.resolve_precision("litemedsam") == pool.resolve_precision("litemedsam") == expected
    assert reads == [ir_dir / SPEC.encoder_int8_file]


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "50000 100000\n"}, lambda: 1),  # docker --cpus 0.5 (cgroup v2)
        ({"cpu.max": "max 100000\n"}, _affinity),  # no quota
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, lambda: 1),  # v1, --cpus 1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, _affinity),  # v1, no quota
        ({"cpu.max": "6400000 100000\n"}, _affinity),  # a quota above the cores this process may use
        ({}, _affinity),  # no cgroup files at all
    ],
)
def test_cpu_budget_follows_docker_cpu_limits(tmp_path: Path, files: dict[str, str], expected) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_budget(tmp_path) == expected()


@pytest.mark.parametrize(("flags", "warned"), [({"avx2", "fma"}, True), ({"avx2", "avx_vnni"}, False)])
def test_int8_asked_for_on_a_cpu_whose_int8_sums_saturate_is_run_with_a_warning(
    ir_dir: Path, monkeypatch, caplog: pytest.LogCaptureFixture, flags: set[str], warned: bool
) -> None:
    monkeypatch.setattr(pool_module, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(pool_module, "cpu_flags", lambda: frozenset(flags))
    pool = pool_module.ModelPool(ir_dir, precision="int8")
    with caplog.at_level("WARNING", logger="seg"):
        pool.get("litemedsam")
    assert pool.resolve_precision("litemedsam") == "int8"
    assert ("without an int8 dot product" in caplog.text) == warned


@pytest.mark.parametrize(("machine", "arm"), [("aarch64", True), ("arm64", True), ("x86_64", False), ("AMD64", False)])
def test_is_arm_names_the_machine(machine: str, arm: bool) -> None:
    assert is_arm(machine) == arm


@pytest.mark.parametrize(("native_f16", "within", "expected"),
                         [(True, True, "f16"), (True, False, "fp32"), (False, True, "fp32"), (False, False, "fp32")])
def test_arm_auto_takes_f16_only_where_native_and_within_the_bound(native_f16: bool, within: bool,
                                                                  expected: str) -> None:
    row = arm_class(native_f16)
    assert row.native_f16 == native_f16
    assert choose_arm_precision(row, f16_within_bound=within) == expected
    line = describe_arm_choice(expected, row)
    assert expected in line and row.cpu in line and "emulated" in line and "speed not measured" in line


@pytest.mark.parametrize("within", [True, False])
def test_model_pool_on_arm_ignores_x86_flags(ir_dir: Path, monkeypatch, caplog: pytest.LogCaptureFixture,
                                            within: bool) -> None:
    """Under QEMU /proc/cpuinfo shows the host's x86 flags: on Arm they must not decide anything."""
    monkeypatch.setattr(pool_module, "this_arm_class", lambda: ARM_TABLE[0])
    monkeypatch.setattr(pool_module, "cpu_has_bf16", lambda: True)  # what an x86 host would say
    monkeypatch.setattr(pool_module, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16", "avx512_vnni"}))
    monkeypatch.setattr(hardware, "F16_WITHIN_BOUND", within)
    pool = pool_module.ModelPool(ir_dir)
    with caplog.at_level("INFO", logger="seg"):
        pool.get("litemedsam")
    assert pool.resolve_precision("litemedsam") == ("f16" if within else "fp32")
    assert ARM_TABLE[0].cpu in caplog.text and "AVX" not in caplog.text


def test_f16_compiles_with_an_f16_hint() -> None:
    assert compile_config(2, "f16")["INFERENCE_PRECISION_HINT"] == "f16"
    assert compile_config(2, "fp32")["INFERENCE_PRECISION_HINT"] == "f32"  # Arm's default is f16: fp32 must say so
