"""Compiling a SAM-family model's IR for the CPU: `compile_sam(spec, ...)` -> its compiled encoder and decoder.

Apart from the predictor (models.predictor.SamPredictor), which only runs what it is given: compiling reads
the IR folder, the environment ($SEG_OV_CACHE_DIR) and the CPU, a session reads none of them, so a session
can be tested on any compiled pair (tests/test_predictor.py builds a tiny one in code).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import openvino as ov

from models.hardware import cpu_flags, shared_core
from models.registry import PRECISIONS, ModelSpec, model_dir

# How ov.save_model writes OpenVINO's "keep this op in f32" mark (models/export/ir_precision.py).
PRECISE_ATTRIBUTE = "DisablePrecisionConversion"

log = logging.getLogger("seg")


def has_precise_stem(model: ov.Model) -> bool:
    """Whether an encoder IR marks its input layers to stay f32 under a bf16 hint (the export marks the
    input Parameter too, so looking there suffices)."""
    return any(key.startswith(PRECISE_ATTRIBUTE) for op in model.get_parameters() for key in op.get_rt_info())


def compile_config(threads: int | None, precision: str) -> dict[str, str]:
    """OpenVINO CPU properties for a low-latency single request (encoder and decoder alike).

    The inference precision is always explicit: on CPUs with AMX/AVX-512 BF16 OpenVINO would otherwise
    run "FP32" models in bf16 silently. "bf16" computes both networks in bf16 except the encoder's input
    layers, which the export marks to stay f32; "int8" runs the INT8 encoder IR with its float parts
    and the decoder in f32; "f16" computes both in f16 (Arm's default, which "fp32" must therefore name).
    """
    hint = {"bf16": "bf16", "f16": "f16"}.get(precision, "f32")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def cache_key(core: ov.Core, config: dict[str, str]) -> str:
    """The subfolder of a user's OpenVINO cache for this OpenVINO, CPU and compile configuration.

    OpenVINO names a blob by a hash of the model and of what it deems relevant of the rest (measured: one
    made with one thread and a bf16 hint has the name of one made with two and f32), and recompiles when a
    blob is unreadable or made from another model (tests/test_ov_cache.py). Keying the folder on the
    OpenVINO version, the CPU's brand string and feature flags (one brand with AVX-512 masked off in a
    VM is another CPU) and every compile property makes sure that a blob is only ever loaded where it
    was made for exactly this.
    """
    facts = [ov.get_version(), str(core.get_property("CPU", "FULL_DEVICE_NAME")), " ".join(sorted(cpu_flags())),
             *(f"{key}={value}" for key, value in sorted(config.items()))]
    return sha256("\n".join(facts).encode()).hexdigest()[:16]


def with_cache_dir(core: ov.Core, config: dict[str, str], cache_dir: Path | str | None) -> dict[str, str]:
    """`config` plus CACHE_DIR, the subfolder of `cache_dir` for this OpenVINO, CPU and configuration
    (cache_key); `config` unchanged where there is no cache folder or it cannot be made."""
    if not cache_dir:
        return config
    folder = Path(cache_dir) / cache_key(core, config)
    try:  # OpenVINO fails to compile at all where it cannot make the folder
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("WARNING: OpenVINO cache %s unusable (%s): compiling without it", cache_dir,
                    error.strerror or error)
        return config
    return {**config, "CACHE_DIR": str(folder)}  # per compile: the Core is shared (models.hardware.shared_core)


@dataclass(frozen=True)
class CompiledSam:
    """One model's encoder and decoder compiled for the CPU: what a SamPredictor runs.

    spec: the model (its pre/post-processing); precision: the one they were compiled at (PRECISIONS);
    directory: the IR folder they came from (None: built in memory); encoder: (1, 3, S, S) float32 image ->
    (1, C, h, w) embedding; decoder: (embedding, (N, 1, 4) boxes in the prompt frame) -> (N, 1, m, m) logits.
    """

    spec: ModelSpec
    precision: str
    encoder: ov.CompiledModel
    decoder: ov.CompiledModel
    directory: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{self.precision}'")


def compile_sam(
    spec: ModelSpec, directory: Path | None = None, threads: int | None = None, precision: str = "fp32",
    *, core: ov.Core | None = None, ov_cache: Path | None = None,
) -> CompiledSam:
    """`spec`'s IR files in `directory` (None: $SEG_MODEL_DIR or models/ir) compiled at `precision` on
    `threads` (None: all cores), the INT8 encoder for "int8"; `ov_cache`: a folder for OpenVINO's
    compiled-model cache (None: $SEG_OV_CACHE_DIR, else none), which saves most of the compile on later runs
    on the same CPU model (docs/results.md, "Start-up and image size")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    core = core or shared_core()
    folder = Path(directory or model_dir())
    config = with_cache_dir(core, compile_config(threads, precision), ov_cache or os.environ.get("SEG_OV_CACHE_DIR"))
    encoder_file = spec.encoder_int8_file if precision == "int8" else spec.encoder_file
    if not (folder / encoder_file).is_file():
        raise FileNotFoundError(f"{folder / encoder_file} is missing (run ./build.sh export)")
    # The decoder compiles in a second thread while the encoder reads and compiles (OpenVINO's Core is
    # thread-safe and releases the GIL): compiling is most of a one-image container's start-up.
    with ThreadPoolExecutor(max_workers=1) as background:
        decoder = background.submit(core.compile_model, folder / spec.decoder_file, "CPU", config)
        encoder = core.read_model(folder / encoder_file)  # read once: checked, then compiled
        if precision == "bf16" and not has_precise_stem(encoder):
            log.warning("WARNING: %s has no f32 mark on its input layers, so bf16 will lose accuracy on "
                        "low-contrast images; re-export it with ./build.sh export", folder / encoder_file)
        compiled_encoder = core.compile_model(encoder, "CPU", config)
        return CompiledSam(spec, precision, compiled_encoder, decoder.result(), folder)


def with_decoder_streams(model: CompiledSam, streams: int, *, core: ov.Core | None = None) -> CompiledSam:
    """`model` with its decoder compiled again from its IR folder to run `streams` infer requests at once,
    its threads (those it was compiled on) split between them; the encoder is shared, not compiled again.

    For independent decoder work done in parallel (seg-serve's two sweeps of a one-box object): one box's
    decoder pass is small matrices that two threads share poorly, so two one-thread streams decode more boxes
    a second than one two-thread stream (docs/results.md, "Interactive server latency").
    """
    if model.directory is None:
        raise ValueError("a model built in memory has no IR folder to compile its decoder from")
    threads = int(model.decoder.get_property("INFERENCE_NUM_THREADS"))
    config = {**compile_config(threads, model.precision), "NUM_STREAMS": str(streams)}
    del config["PERFORMANCE_HINT"]  # the hint would choose the streams itself
    decoder = (core or shared_core()).compile_model(model.directory / model.spec.decoder_file, "CPU", config)
    return CompiledSam(model.spec, model.precision, model.encoder, decoder, model.directory)

