"""Memory guard: what a case will need, from its npy headers, against what this process may still use.

`estimate_case` is an upper bound of a case's peak memory above the process's resident memory before
it (models compiled): the arrays as loaded and converted, the strategy's working memory (label map,
masks, vote arrays, the embedding cache: its Strategy.working_bytes) and the model's inference buffers
that are not allocated yet (its ModelSpec.buffers, models.registry.ModelBuffers, with the figures measured).
OpenVINO keeps the buffers of the largest decoder batch it has run, so decoding fewer boxes at a time
is the lever when a case does not fit (`fitting_decode_batch`); below one box at a time the case is refused.

Measured (VmHWM above VmRSS before the case, LiteMedSAM, models compiled, fresh process per case;
`python -m benchmarks.memory`): on the 13 dev cases, 7 dev-sts cases, the 4 demo cases, the (100, 512,
512) volume and the 2048x2048 image the estimate is 1.27-2.23 times the peak (lowest: fp32, demo PET);
docs/results.md "Memory guard" has the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.predictor import DEFAULT_CACHE_BYTES, DEFAULT_DECODE_BATCH
from models.registry import MIB, ModelBuffers, get_spec
from router.casefile import ArrayHeader, segs_shape
from router.routing import Route
from router.strategies.footprint import EmbeddingRoom
from router.strategies.registry import get_strategy
from router.validation import CaseError, clip_boxes

GIB = 1 << 30


def _halvings(batch: int) -> tuple[int, ...]:
    """batch, batch // 2, ..., 1."""
    return (batch, *_halvings(batch // 2)) if batch > 1 else (1,)


# Anything else a case allocates (resized slices, encoder input, small temporaries, allocator slack): a margin
# the strategies' estimates do not itemise. Chosen with the estimates when the guard was built; that the sum
# bounds every peak measured since, by 1.27x or more, is in docs/results.md, "Memory guard".
MISC_BYTES = 64 * MIB


@dataclass(frozen=True)
class Warmth:
    """What the predictor has already allocated: whether it has encoded, its largest decoder batch."""

    encoded: bool = False
    largest_decoded_batch: int = 0


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
    """Peak of CaseFile.read: the arrays as loaded, the grey->RGB repeat, to_uint8's float64 work, the result.

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


def _decoder(buffers: ModelBuffers, warmth: Warmth, boxes_per_call: int, decode_batch: int) -> int:
    """Decoder buffers still to be allocated for calls of up to `boxes_per_call` boxes."""
    batch = min(decode_batch, boxes_per_call)
    if batch == 0:
        return 0
    first = 0 if warmth.largest_decoded_batch else buffers.first_decode
    return first + max(0, batch - max(warmth.largest_decoded_batch, 1)) * buffers.per_box


def checked_boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Raw `boxes` as stored -> (N, 4|6) int64 clipped to `shape`, as CaseFile.read will make them
    (router.validation.clip_boxes); None when CaseFile.read will refuse them (only the reading is estimated)."""
    try:
        return clip_boxes(boxes, shape)
    except CaseError:
        return None


@dataclass(frozen=True)
class Estimate:
    """Bytes a case needs at each decoder batch size tried (the predictor's, halved down to 1), reading included."""

    by_batch: dict[int, int]

    def best_batch(self, available: int) -> int | None:
        """The largest decoder batch whose need fits in `available`; None if even one box does not fit."""
        return next((batch for batch in sorted(self.by_batch, reverse=True) if self.by_batch[batch] <= available),
                    None)


def estimate_case(
    dim: int,
    headers: dict[str, ArrayHeader],
    boxes: np.ndarray | None,
    route: Route,
    warmth: Warmth = Warmth(),
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    default_batch: int = DEFAULT_DECODE_BATCH,
) -> Estimate:
    """Upper bound of a case's peak memory above the process's current resident memory, per decoder batch.

    headers: read_headers of the case; boxes: its `boxes` as stored (None: not readable, estimate the
    reading only, as CaseFile.read will refuse it); route: what will run it, whose strategy estimates its
    working memory and whose model's buffers (ModelSpec.buffers) are counted. Read and run phases do not
    overlap (the loaded array is the case image or freed by its conversion), so the need is the larger of
    the two, plus MISC_BYTES. default_batch: the predictor's decoder batch; its halvings are estimated too.
    """
    batches = _halvings(default_batch)
    image = headers["imgs"]
    others = sum(header.nbytes for name, header in headers.items() if name in ("boxes", "spacing"))
    reading = read_bytes(dim, image, others)
    shape = segs_shape(dim, image)
    clipped = None if shape is None or boxes is None else checked_boxes(boxes, shape)
    if shape is None or clipped is None:
        return Estimate({batch: reading + MISC_BYTES for batch in batches})
    image_bytes = math.prod(shape) * (3 if dim == 2 else 1)
    strategy, spec = get_strategy(route.strategy), get_spec(route.model)
    room = EmbeddingRoom(spec.embedding_bytes, cache_bytes, spec.prompt_frame)
    work = strategy.working_bytes(shape, clipped, route.params, room)
    per_call = strategy.boxes_per_call(shape, clipped, route.params)
    buffers = spec.buffers
    encoder = 0 if warmth.encoded or len(clipped) == 0 else buffers.first_encode
    return Estimate({
        batch: max(reading, image_bytes + work + encoder + _decoder(buffers, warmth, per_call, batch)) + MISC_BYTES
        for batch in batches
    })


def fitting_decode_batch(estimate: Estimate, available: int | None, default_batch: int = DEFAULT_DECODE_BATCH) -> int:
    """The decoder batch to run a case with: `default_batch` when it fits (or nothing is known of the
    memory), else the largest smaller one that fits. Raises CaseError naming both sizes when none does."""
    if available is None or estimate.by_batch[default_batch] <= available:
        return default_batch
    batch = estimate.best_batch(available)
    if batch is None or batch > default_batch:
        raise CaseError(f"needs {gib(estimate.by_batch[1])} of memory, "
                        f"{gib(available)} available: not segmented")
    return batch
