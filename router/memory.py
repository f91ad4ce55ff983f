"""Memory guard: what a case will need, from its npy headers, against what this process may still use.

`estimate_case` is an upper bound of a case's peak memory above the process's resident memory before
it (models compiled): the arrays as loaded and converted, the strategy's working memory (label map,
masks, vote arrays, the embedding cache) and the model's inference buffers that are not allocated yet.
OpenVINO keeps the buffers of the largest decoder batch it has run, so decoding fewer boxes at a time
is the lever when a case does not fit (`plan_case`); below one box at a time the case is refused.

Measured (VmHWM above VmRSS before the case, LiteMedSAM, models compiled, fresh process per case;
`python -m benchmarks.memory`): on the 13 dev cases, 7 dev-sts cases, the 4 demo cases, the (100, 512,
512) volume and the 2048x2048 image the estimate is 1.27-2.23 times the peak (lowest: fp32, demo PET);
docs/results.md "Memory guard" has the table. Each model's buffers are its ModelSpec's
(models.registry.ModelBuffers, with the figures measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.predictor import DEFAULT_CACHE_BYTES, DEFAULT_DECODE_BATCH
from models.registry import MIB, ModelBuffers, get_spec
from router.casefile import ArrayHeader, segs_shape
from router.strategies.propagate3d import MAX_SKIP_STEP
from router.validation import CaseError, clip_boxes

GIB = 1 << 30


def _halvings(batch: int) -> tuple[int, ...]:
    """batch, batch // 2, ..., 1."""
    return (batch, *_halvings(batch // 2)) if batch > 1 else (1,)


DECODE_BATCHES = _halvings(DEFAULT_DECODE_BATCH)  # tried in turn: the predictor's default (16) first, halved
# Anything else a case allocates (resized slices, encoder input, small temporaries, allocator slack).
MISC_BYTES = 64 * MIB
BOX_CHUNK_2D = 64  # router.strategies.image2d.BOX_BATCH: boxes whose masks exist at once


@dataclass(frozen=True)
class Warmth:
    """What the predictor has already allocated: whether it has encoded, its largest decoder batch."""

    encoded: bool = False
    decoded_batch: int = 0


def gib(size: float) -> str:
    return f"{size / GIB:.2f} GiB"


# ---- the memory this process may use -----------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's memory limit in bytes (docker -m), v2 `memory.max` or v1 `memory.limit_in_bytes`;
    None when unlimited ("max", or v1's page-rounded 2**63) or unknown."""
    limit = _read_int(root / "memory.max")  # "max" when unlimited: not digits, so None
    if limit is None:
        limit = _read_int(root / "memory" / "memory.limit_in_bytes")
    return limit if limit is not None and limit < 1 << 60 else None


def proc_kib_field(path: Path, field: str) -> int | None:
    """A "Field:  N kB" line of a /proc file (meminfo, status) in bytes; None if absent or unreadable."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable of /proc/meminfo in bytes (what the kernel can give without swapping); None if unknown."""
    return proc_kib_field(meminfo, "MemAvailable")


def resident_bytes(status: Path = Path("/proc/self/status")) -> int:
    """This process's resident memory (VmRSS) in bytes; 0 if unknown."""
    return proc_kib_field(status, "VmRSS") or 0


def available_bytes(
    cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo"),
    status: Path = Path("/proc/self/status"),
) -> int | None:
    """Bytes this process may still allocate: the cgroup limit less its resident memory, and at most
    MemAvailable; None when neither is known (no guard then)."""
    limit, free = cgroup_memory_limit(cgroup_root), meminfo_available(meminfo)
    room = [size for size in (None if limit is None else limit - resident_bytes(status), free) if size is not None]
    return max(0, min(room)) if room else None


# ---- what a case needs -------------------------------------------------------------------------------


def read_bytes(dim: int, image: ArrayHeader, other_bytes: int) -> int:
    """Peak of read_case: the arrays as loaded, the grey->RGB repeat, to_uint8's float64 work, the result.

    to_uint8 holds at most the image, a float64 copy, np.percentile's float64 copy and two float64
    temporaries of the scaling at once (8 + 8 + 16 bytes per element), plus the uint8 result.
    """
    elements = math.prod(image.shape)
    if dim == 2 and len(image.shape) == 2:  # repeated to 3 channels before conversion
        elements *= 3
    loaded = image.nbytes + other_bytes + (elements * image.dtype.itemsize if dim == 2 else 0)
    if image.dtype == np.uint8:
        return loaded + elements  # ascontiguousarray of an (H, W, 4) slice
    convert = 2 * elements if image.dtype == np.bool_ else 33 * elements
    return loaded + convert + elements


def max_overlap(lows: np.ndarray, highs: np.ndarray, size: int) -> int:
    """Most inclusive [low, high] ranges covering one index of 0..size-1 (boxes active on one slice)."""
    if len(lows) == 0:
        return 0
    counts = np.zeros(size + 1, np.int64)
    np.add.at(counts, np.clip(lows, 0, size - 1), 1)
    np.add.at(counts, np.clip(highs, 0, size - 1) + 1, -1)
    return int(np.cumsum(counts).max())


def covered(lows: np.ndarray, highs: np.ndarray, size: int) -> int:
    """How many indices of 0..size-1 some inclusive [low, high] range covers (slices a sweep encodes)."""
    hit = np.zeros(size, bool)
    for low, high in zip(lows, highs, strict=True):
        hit[max(low, 0) : min(high, size - 1) + 1] = True
    return int(hit.sum())


def _decoder(buffers: ModelBuffers, warmth: Warmth, boxes_per_call: int, decode_batch: int) -> int:
    """Decoder buffers still to be allocated for calls of up to `boxes_per_call` boxes."""
    batch = min(decode_batch, boxes_per_call)
    if batch == 0:
        return 0
    first = 0 if warmth.decoded_batch else buffers.first_decode
    return first + max(0, batch - max(warmth.decoded_batch, 1)) * buffers.per_box


def _slice_work(pixels: int, masks: int) -> int:
    """Per slice: `masks` bool masks, paint_masks' two bool temporaries, upsampling's float32 region."""
    return masks * pixels + 2 * pixels + 4 * pixels


def _sweep_work(pixels: int, masks: int) -> int:
    """A 3D sweep's slice work, with the masks of up to MAX_SKIP_STEP slices held between two decoded ones
    and the two float32 distance maps that interpolate them (router.strategies.propagate3d.SliceSkip)."""
    return _slice_work(pixels, masks) + MAX_SKIP_STEP * masks * pixels + 2 * 4 * pixels


def image2d_bytes(shape: tuple[int, ...], boxes: np.ndarray, label_bytes: int, cache_bytes: int,
                  embedding_bytes: int) -> int:
    """image2d on an (H, W) image: label map, masks of one chunk of boxes, a zoom crop, resize matrices."""
    height, width = shape
    pixels = height * width
    resize_matrices = 16 * (height + width) * 256 * 4  # models.transforms.bilinear_axis, lru_cache of 16
    return label_bytes * pixels + _slice_work(pixels, min(len(boxes), BOX_CHUNK_2D)) + 3 * pixels + resize_matrices


def propagate_bytes(shape: tuple[int, ...], boxes: np.ndarray, label_bytes: int, cache_bytes: int,
                    embedding_bytes: int) -> int:
    """propagate on a (D, H, W) volume: label map, one slice's masks, the cached embeddings of its slices."""
    depth, height, width = shape
    active = max_overlap(boxes[:, 2], boxes[:, 5], depth)
    cache = min(cache_bytes, covered(boxes[:, 2], boxes[:, 5], depth) * embedding_bytes) + embedding_bytes
    return label_bytes * math.prod(shape) + _sweep_work(height * width, active) + cache


def triplanar_bytes(shape: tuple[int, ...], boxes: np.ndarray, label_bytes: int, cache_bytes: int,
                    embedding_bytes: int) -> int:
    """triplanar_vote on a (D, H, W) volume: two transposed copies, label map, float32 `best` map and per-box
    float32 votes (+ bool temporaries of the largest), one slice's masks of the widest view, the cache."""
    depth, height, width = shape
    voxels = math.prod(shape)
    sizes = (boxes[:, 3:] - boxes[:, :3] + 1).astype(np.int64)
    box_voxels = sizes.prod(axis=1) if len(boxes) else np.zeros(1, np.int64)
    active = max(max_overlap(boxes[:, axis], boxes[:, axis + 3], extent)
                 for axis, extent in ((2, depth), (1, height), (0, width)))
    slice_pixels = max(height * width, depth * width, depth * height)
    slices = sum(covered(boxes[:, axis], boxes[:, axis + 3], extent)
                 for axis, extent in ((2, depth), (1, height), (0, width)))
    cache = min(cache_bytes, slices * embedding_bytes) + embedding_bytes
    return ((2 + label_bytes + 4) * voxels + 4 * int(box_voxels.sum()) + 2 * int(box_voxels.max())
            + _sweep_work(slice_pixels, active) + cache)


# strategy name -> bytes its run needs besides the image (shape, clipped boxes, label itemsize, cache budget)
STRATEGY_BYTES: dict[str, Callable[..., int]] = {
    "image2d": image2d_bytes, "propagate": propagate_bytes, "triplanar_vote": triplanar_bytes,
}


def checked_boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Raw `boxes` as stored -> (N, 4|6) int64 clipped to `shape`, as read_case will make them
    (router.validation.clip_boxes); None when read_case will refuse them (only the reading is estimated)."""
    try:
        return clip_boxes(boxes, shape)
    except CaseError:
        return None


@dataclass(frozen=True)
class Estimate:
    """Bytes a case needs at each decoder batch size (DECODE_BATCHES), reading included."""

    by_batch: dict[int, int]

    def best_batch(self, available: int) -> int | None:
        """The largest decoder batch whose need fits in `available`; None if even one box does not fit."""
        return next((batch for batch in DECODE_BATCHES if self.by_batch[batch] <= available), None)


def estimate_case(
    dim: int,
    headers: dict[str, ArrayHeader],
    boxes: np.ndarray | None,
    strategy: str,
    model: str,
    warmth: Warmth = Warmth(),
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> Estimate:
    """Upper bound of a case's peak memory above the process's current resident memory, per decoder batch.

    headers: read_headers of the case; boxes: its `boxes` as stored (None: not readable, estimate the
    reading only, as read_case will refuse it). Read and run phases do not overlap (the loaded array is
    the case image or freed by its conversion), so the need is the larger of the two, plus MISC_BYTES.
    """
    image = headers["imgs"]
    others = sum(header.nbytes for name, header in headers.items() if name in ("boxes", "spacing"))
    reading = read_bytes(dim, image, others)
    shape = segs_shape(dim, image)
    clipped = None if shape is None or boxes is None else checked_boxes(boxes, shape)
    if shape is None or clipped is None:
        return Estimate({batch: reading + MISC_BYTES for batch in DECODE_BATCHES})
    image_bytes = math.prod(shape) * (3 if dim == 2 else 1)
    label_bytes = 1 if len(clipped) <= 255 else 2
    spec = get_spec(model)
    work = STRATEGY_BYTES.get(strategy, triplanar_bytes if dim == 3 else image2d_bytes)(
        shape, clipped, label_bytes, cache_bytes, spec.embedding_bytes)
    buffers = spec.buffers
    encoder = 0 if warmth.encoded or len(clipped) == 0 else buffers.first_encode
    per_call = len(clipped) if dim == 2 else max(max_overlap(clipped[:, axis], clipped[:, axis + 3], extent)
                                                  for axis, extent in zip((2, 1, 0), shape, strict=True))
    per_call = min(per_call, BOX_CHUNK_2D) if dim == 2 else per_call
    return Estimate({
        batch: max(reading, image_bytes + work + encoder + _decoder(buffers, warmth, per_call, batch)) + MISC_BYTES
        for batch in DECODE_BATCHES
    })


def plan_case(estimate: Estimate, available: int | None, default_batch: int = DECODE_BATCHES[0]) -> int:
    """The decoder batch to run a case with: `default_batch` when it fits (or nothing is known of the
    memory), else the largest smaller one that fits. Raises CaseError naming both sizes when none does."""
    if available is None or estimate.by_batch[default_batch] <= available:
        return default_batch
    batch = estimate.best_batch(available)
    if batch is None or batch > default_batch:
        raise CaseError(f"needs {gib(estimate.by_batch[DECODE_BATCHES[-1]])} of memory, "
                        f"{gib(available)} available: not segmented")
    return batch
