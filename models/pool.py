"""Compiled predictors by model name, made on first use and kept for the whole run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from models.hardware import (
    choose_arm_precision,
    choose_precision,
    cpu_flags,
    cpu_has_bf16,
    cpu_has_f16,
    describe_arm_choice,
    describe_choice,
    int8_is_exact,
    int8_recipe,
    is_arm,
    this_arm_class,
)
from models.predictor import DEFAULT_CACHE_BYTES, SamPredictor
from models.registry import MODELS, get_spec, is_available, model_dir

log = logging.getLogger("seg")


class ModelPool:
    """Predictors by model name, compiled lazily: a run pays only for the models its cases need.

    precision "auto": models.hardware.choose_precision, from the CPU's real capabilities and the measured
    decision table there: bf16 where the CPU computes bf16 natively (AMX, AVX-512 BF16), INT8 only where
    its recipe holds fp32's accuracy (models.hardware.INT8_RECIPES_WITHIN_BOUND), else fp32; on Arm, f16 only
    where it holds fp32's accuracy (models.hardware.F16_WITHIN_BOUND), else fp32. The choice is
    logged once, with the figures behind it. available: the models routes may take (None: every model
    exported in `directory`). ov_cache: OpenVINO's compiled-model cache folder (see
    models.compiled.compile_sam), None for $SEG_OV_CACHE_DIR or none.
    """

    def __init__(
        self, directory: Path | None = None, threads: int | None = None, precision: str = "auto",
        cache_bytes: int = DEFAULT_CACHE_BYTES, ov_cache: Path | None = None, available: set[str] | None = None,
        make_predictor: Callable[..., SamPredictor] = SamPredictor.compile,
    ) -> None:
        self.directory = Path(directory or model_dir())
        self.ov_cache = ov_cache
        self.threads = threads
        self.precision = precision
        self.cache_bytes = cache_bytes
        # SamPredictor.compile's arguments -> a predictor (benchmarks.study's stores its embeddings)
        self.make_predictor = make_predictor
        self.available = available if available is not None else {
            name for name in MODELS if is_available(name, self.directory)}
        self._predictors: dict[str, SamPredictor] = {}
        self._logged: set[str] = set()
        self._int8_recipes: dict[str, str | None] = {}

    def resolve_precision(self, name: str) -> str:
        """The precision model `name` runs in: the one asked for, or the `auto` choice for this CPU."""
        if self.precision != "auto":
            return self.precision
        return self._auto_precision(name)

    def _auto_precision(self, name: str) -> str:
        if (arm := this_arm_class()) is not None:
            return choose_arm_precision(arm)
        native_bf16 = cpu_has_bf16()
        # Reading the INT8 IR's recipe takes tens of ms of a container's start-up: only where INT8 could be
        # chosen (no native bf16, an int8 dot product), once per model; elsewhere choose_precision is fp32.
        if not native_bf16 and int8_is_exact(cpu_flags()) and name not in self._int8_recipes:
            self._int8_recipes[name] = int8_recipe(self.directory / get_spec(name).encoder_int8_file)
        return choose_precision(native_bf16, cpu_flags(), self._int8_recipes.get(name))

    def get(self, name: str) -> SamPredictor:
        """The compiled predictor of model `name` (compiled now if this is its first use)."""
        if name not in self._predictors:
            if name not in self.available:
                raise FileNotFoundError(f"model '{name}' is not exported in {self.directory} (run ./build.sh export)")
            precision = self.resolve_precision(name)
            if self.precision == "auto" and precision not in self._logged:  # once per run and precision
                self._logged.add(precision)
                arm = this_arm_class()
                log.info("%s", describe_arm_choice(precision, arm) if arm is not None
                         else describe_choice(precision, cpu_has_bf16(), cpu_flags()))
            if self.precision == "f16" and not cpu_has_f16():
                log.warning("WARNING: --precision f16 on a CPU without native f16 (an Arm CPU with ARMv8.2 FP16): "
                            "OpenVINO computes it in another precision here; auto takes %s (see models/hardware.py)",
                            self._auto_precision(name))
            if self.precision == "bf16" and not cpu_has_bf16():
                log.warning("WARNING: --precision bf16 on a CPU without native bf16 (AMX or AVX-512 BF16): "
                            "no speed to gain here; auto takes %s (see models/hardware.py)",
                            self._auto_precision(name))
            if self.precision == "int8" and not is_arm() and cpu_flags() and not int8_is_exact(cpu_flags()):
                log.warning("WARNING: --precision int8 on a CPU without an int8 dot product (VNNI or AMX): its int8 "
                            "sums saturate, so the encoder is less accurate than validated, and slower than fp32 "
                            "where measured; auto takes %s (see models/hardware.py)", self._auto_precision(name))
            self._predictors[name] = self.make_predictor(
                get_spec(name), self.directory, self.threads, precision, self.cache_bytes, ov_cache=self.ov_cache
            )
        return self._predictors[name]
