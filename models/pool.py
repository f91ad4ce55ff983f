"""Compiled predictors by model name, made on first use and kept for the whole run."""

from __future__ import annotations

import logging
from pathlib import Path

from models.hardware import choose_precision, cpu_flags, cpu_has_bf16
from models.predictor import DEFAULT_CACHE_BYTES, SamPredictor
from models.registry import MODELS, get_spec, is_available, model_dir

log = logging.getLogger("seg")


class ModelPool:
    """Predictors by model name, compiled lazily: a run pays only for the models its cases need.

    precision "auto": models.hardware.choose_precision, by measurement (2 cores, LiteMedSAM encoder):
      * bf16 on CPUs with AMX: 155-165 ms per slice against 390 for
        FP32, dev mean DSC equal to FP32 and every case within 0.011 (the encoder's input layers stay
        f32: all-bf16 lost 0.07 on mammography);
      * else the INT8 encoder where ./build.sh export made one and the CPU has an int8 dot product
        (VNNI) or AVX-512 (dev mean DSC +0.006 vs FP32);
      * else FP32 (on AVX2 without VNNI the INT8 encoder is slower than FP32).
    """

    def __init__(
        self, directory: Path | None = None, threads: int | None = None, precision: str = "auto",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.directory = Path(directory or model_dir())
        self.threads = threads
        self.precision = precision
        self.cache_bytes = cache_bytes
        self.available = {name for name in MODELS if is_available(name, self.directory)}
        self._predictors: dict[str, SamPredictor] = {}

    def resolve_precision(self, name: str) -> str:
        """The precision model `name` runs in: the one asked for, or the `auto` choice for this CPU."""
        if self.precision != "auto":
            return self.precision
        return self._auto_precision(name)

    def _auto_precision(self, name: str) -> str:
        int8_built = (self.directory / get_spec(name).encoder_int8_file).is_file()
        return choose_precision(cpu_has_bf16(), cpu_flags(), int8_built)

    def get(self, name: str) -> SamPredictor:
        """The compiled predictor of model `name` (compiled now if this is its first use)."""
        if name not in self._predictors:
            if name not in self.available:
                raise FileNotFoundError(f"model '{name}' is not exported in {self.directory} (run ./build.sh export)")
            precision = self.resolve_precision(name)
            if self.precision == "bf16" and (auto := self._auto_precision(name)) != "bf16":
                log.warning("WARNING: --precision bf16 on a CPU without AMX: measured slower than %s here "
                            "(see models/hardware.py)", auto)
            self._predictors[name] = SamPredictor(
                get_spec(name), self.directory, self.threads, precision, self.cache_bytes
            )
        return self._predictors[name]
