"""OpenVINO session for one box-prompted SAM-family model: `set_image(image)` then `predict(boxes)`.

The predictor knows nothing about strategies; strategies know nothing about which model they drive.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np
import openvino as ov

from models.hardware import cpu_flags, shared_core
from models.registry import PRECISIONS, ModelSpec, model_dir
from models.transforms import (
    longest_side_shape,
    postprocess_masks,
    preprocess,
    scale_boxes,
    stability_scores,
)

DEFAULT_CACHE_BYTES = 1 << 30
DEFAULT_DECODE_BATCH = 16  # boxes per decoder call (SamPredictor's decode_batch)
# How ov.save_model writes OpenVINO's "keep this op in f32" mark (models/export/ir_precision.py).
PRECISE_ATTRIBUTE = "DisablePrecisionConversion"

log = logging.getLogger("seg")


def has_precise_stem(model: ov.Model) -> bool:
    """Whether an encoder IR marks its input layers to stay f32 under a bf16 hint (the export marks the
    input Parameter too, so looking there suffices)."""
    return any(key.startswith(PRECISE_ATTRIBUTE) for op in model.get_parameters() for key in op.get_rt_info())


@dataclass(frozen=True)
class Embedding:
    """One encoded image: features (1, C, h, w) float32 and the image's original (H, W)."""

    features: np.ndarray
    original_hw: tuple[int, int]

    def blend(self, other: Embedding, weight: float) -> Embedding:
        """(1 - weight) x this + weight x `other`, features blended elementwise: an estimate of the embedding
        of an image between two neighbouring ones (a volume's slices), at a decoder pass's cost instead of an
        encoder pass's. Both must be of images of one size."""
        if other.original_hw != self.original_hw or other.features.shape != self.features.shape:
            raise ValueError(f"cannot blend embeddings of {self.original_hw} and {other.original_hw} images")
        features = (1.0 - weight) * self.features + weight * other.features
        return Embedding(features.astype(np.float32, copy=False), self.original_hw)


class EmbeddingCache:
    """Least-recently-used store of embeddings with a hard byte budget (never exceeded)."""

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._items: OrderedDict[Hashable, Embedding] = OrderedDict()

    def get(self, key: Hashable) -> Embedding | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, item: Embedding) -> None:
        size = item.features.nbytes
        if size > self.budget_bytes:
            return
        if key in self._items:
            self.used_bytes -= self._items.pop(key).features.nbytes
        while self.used_bytes + size > self.budget_bytes:
            self.used_bytes -= self._items.popitem(last=False)[1].features.nbytes
        self._items[key] = item
        self.used_bytes += size

    def clear(self) -> None:
        self._items.clear()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._items)


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


def compile_requests(
    core: ov.Core, spec: ModelSpec, directory: Path, precision: str, config: dict[str, str]
) -> tuple[ov.InferRequest, ov.InferRequest]:
    """(encoder, decoder) infer requests of `spec`'s IR files in `directory` at `precision`."""
    encoder_file = spec.encoder_int8_file if precision == "int8" else spec.encoder_file
    if not (directory / encoder_file).is_file():
        raise FileNotFoundError(f"{directory / encoder_file} is missing (run ./build.sh export)")
    # The decoder compiles in a second thread while the encoder reads and compiles (OpenVINO's Core is
    # thread-safe and releases the GIL): compiling is most of a one-image container's start-up.
    with ThreadPoolExecutor(max_workers=1) as background:
        decoder = background.submit(core.compile_model, directory / spec.decoder_file, "CPU", config)
        encoder = core.read_model(directory / encoder_file)  # read once: checked, then compiled
        if precision == "bf16" and not has_precise_stem(encoder):
            log.warning("WARNING: %s has no f32 mark on its input layers, so bf16 will lose accuracy on "
                        "low-contrast images; re-export it with ./build.sh export", directory / encoder_file)
        encoder_request = core.compile_model(encoder, "CPU", config).create_infer_request()
        return encoder_request, decoder.result().create_infer_request()


class SamPredictor:
    """Encoder + decoder of one exported model, with an embedding cache.

    spec: which model (see models.registry); directory: folder with its IR files.
    threads: CPU threads for OpenVINO (None: all cores); precision: one of models.registry.PRECISIONS.
    decode_batch: boxes per decoder call. The decoder's cost is per box whatever the batch, but its
        intermediates grow with it (the image embedding is repeated per box): 16 keeps a 125-box
        image well under 1 GiB, where 64 peaked at 3 GiB.
    ov_cache: a folder for OpenVINO's compiled-model cache (CACHE_DIR), kept across runs or containers
        (predict.py --ov-cache); None: $SEG_OV_CACHE_DIR, else no cache (the default). It saves most of the
        compile on later runs on the same CPU model (docs/results.md, "Start-up and image size").
    """

    def __init__(
        self,
        spec: ModelSpec,
        directory: Path | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        decode_batch: int = DEFAULT_DECODE_BATCH,
        core: ov.Core | None = None,
        ov_cache: Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
        self.spec = spec
        self.precision = precision  # the precision it was compiled at
        core = core or shared_core()
        cache_dir = ov_cache or os.environ.get("SEG_OV_CACHE_DIR")
        config = with_cache_dir(core, compile_config(threads, precision), cache_dir)
        self._encoder, self._decoder = compile_requests(core, spec, Path(directory or model_dir()), precision, config)
        self.cache = EmbeddingCache(cache_bytes)
        self.decode_batch = decode_batch
        self.largest_decoded_batch = 0  # OpenVINO keeps the buffers of the largest batch run (router.memory)
        self.encoder_calls = 0
        self.decoder_calls = 0  # decoder infer calls (a call decodes up to decode_batch boxes), for benchmarks
        self.encoder_seconds = 0.0  # time in the encoder (preprocessing included), for benchmarks
        self._embedding: Embedding | None = None

    def encode(self, image: np.ndarray) -> Embedding:
        """(H, W, 3) or grey (H, W) uint8 -> Embedding (always runs the encoder)."""
        start = time.perf_counter()
        tensor, _ = preprocess(image, self.spec)
        # share_inputs: OpenVINO reads the numpy buffers in place instead of copying them per call
        self._encoder.infer({0: tensor}, share_inputs=True)
        features = self._encoder.get_output_tensor(0).data.copy()
        self.encoder_calls += 1
        self.encoder_seconds += time.perf_counter() - start
        return Embedding(features, image.shape[:2])

    def set_image(self, image: np.ndarray, *, key: Hashable | None = None) -> None:
        """Make `image` the current one; with a `key`, reuse or fill the embedding cache. `key` is keyword-only:
        SAM's second positional argument is `image_format`, and code ported from SAM that passes "RGB" there
        must fail rather than key the cache on it."""
        embedding = self.cache.get(key) if key is not None else None
        if embedding is None:
            embedding = self.encode(image)
            if key is not None:
                self.cache.put(key, embedding)
        self._embedding = embedding

    def get_image_embedding(self) -> Embedding:
        """The current image's embedding (set_image first)."""
        if self._embedding is None:
            raise RuntimeError("call set_image() before get_image_embedding()")
        return self._embedding

    def set_image_embedding(self, embedding: Embedding) -> None:
        """Make `embedding` the current one, as if its image had been set (no encoder pass)."""
        self._embedding = embedding

    def predict(self, boxes: np.ndarray, batch: int | None = None) -> np.ndarray:
        """(N, 4) [x0, y0, x1, y1] boxes in original pixels -> (N, H, W) bool masks for the current image.

        batch: boxes per decoder call (None: `decode_batch`); the memory guard lowers it for a large case.
        """
        return self._decode(boxes, batch, scored=False)[0]

    def predict_scored(self, boxes: np.ndarray, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes -> ((N, H, W) bool masks, (N,) stability scores), as predict; the stability
        (models.transforms.stability_scores) is taken over the image's area of the low-resolution logits."""
        return self._decode(boxes, batch, scored=True)

    def _decode(self, boxes: np.ndarray, batch: int | None, scored: bool) -> tuple[np.ndarray, np.ndarray]:
        """Masks and, when `scored` (else zeros: 3D sweeps decode without them), stability scores."""
        if self._embedding is None:
            raise RuntimeError("call set_image() before predict()")
        step = batch or self.decode_batch
        original_hw = self._embedding.original_hw
        masks = np.zeros((len(boxes), *original_hw), bool)
        stability = np.zeros(len(boxes))
        prompt_boxes = scale_boxes(np.asarray(boxes).reshape(-1, 4), original_hw, self.spec)
        for start in range(0, len(boxes), step):
            chunk = prompt_boxes[start : start + step]
            self.largest_decoded_batch = max(self.largest_decoded_batch, len(chunk))
            self._decoder.infer({0: self._embedding.features, 1: np.ascontiguousarray(chunk)}, share_inputs=True)
            self.decoder_calls += 1
            logits = self._decoder.get_output_tensor(0).data
            if scored:
                side = logits.shape[-1]
                crop_h, crop_w = (-(-n * side // self.spec.prompt_frame) for n in
                                  longest_side_shape(*original_hw, self.spec.prompt_frame))
                stability[start : start + len(chunk)] = stability_scores(logits[:, 0, :crop_h, :crop_w])
            postprocess_masks(logits, original_hw, self.spec, out=masks[start : start + len(chunk)])
        return masks, stability

    def reset(self) -> None:
        """Forget the current image and every cached embedding (call between cases)."""
        self.cache.clear()
        self._embedding = None
