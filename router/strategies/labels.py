"""From per-box masks to one label map: each box's mask kept inside its box, then every voxel that several
masks claim given to one of them by a rule that does not depend on the order of the boxes.

Why a rule at all: a whole scan carries boxes of very different sizes (a kidney, and a vessel tree whose
box spans the abdomen and whose mask is a large wrong blob). Painting masks in box order let such a blob
erase organs segmented well; measured on whole scans in docs/results.md, "Whole scans: contested voxels".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from router.strategies import StrategyParams

# later_box: box order decides (label i + 1 over label i), what the challenge's baseline does.
# smaller_box: the box of smaller volume wins (a lesion in its organ, an organ in a vessel tree's box), unless
#   it would take more than `overlap_max_take` of the other mask's voxels: then that one keeps them.
OVERLAP_RULES = ("smaller_box", "later_box")


@dataclass(frozen=True, kw_only=True)
class MaskParams(StrategyParams):
    """What becomes of each box's mask on its way into the label map (a field of every strategy's parameters).

    clip_to_box: a box's mask keeps only the voxels inside its box (the prompt says the object is there).
    overlap: who takes a voxel that several masks claim (OVERLAP_RULES).
    overlap_max_take: with smaller_box, a mask may take at most this fraction of another's voxels; a smaller
        box whose mask would take more of a larger one's (two near-copies of one blob) leaves them to it.
    """

    clip_to_box: bool = True
    overlap: str = "smaller_box"
    overlap_max_take: float = 0.5

    def __post_init__(self) -> None:
        """Raise ValueError unless clip_to_box is a bool, overlap one of OVERLAP_RULES and
        0 <= overlap_max_take <= 1."""
        super().__post_init__()
        if not isinstance(self.clip_to_box, bool):
            raise ValueError(f"clip_to_box must be true or false, got {self.clip_to_box}")
        if self.overlap not in OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {list(OVERLAP_RULES)}, got {self.overlap!r}")
        if not 0.0 <= self.overlap_max_take <= 1.0:
            raise ValueError(f"overlap_max_take must be in [0, 1], got {self.overlap_max_take}")


class BoxMasks:
    """Each box's mask, held inside its box's region of the label map until `label_map` resolves them.

    shape: the label map's shape (H, W) or (D, H, W). lows, highs: (N, ndim) int, each box's inclusive
    corners in the array's axis order ((y, x) or (z, y, x)), inside the map. clip: keep masks inside their
    boxes (else every region is the whole map, N maps of memory). A mask that arrives for a box again
    replaces the voxels it covers.
    """

    def __init__(self, shape: tuple[int, ...], lows: np.ndarray, highs: np.ndarray, clip: bool = True) -> None:
        self.shape = tuple(shape)
        self.box_volumes = np.prod(np.asarray(highs) - np.asarray(lows) + 1, axis=1).astype(np.int64)
        self.origins = [np.asarray(low if clip else np.zeros(len(shape), np.int64), np.int64) for low in lows]
        ends = [np.asarray(high, np.int64) + 1 if clip else np.asarray(shape, np.int64) for high in highs]
        self.crops = [np.zeros(tuple(end - origin), bool) for origin, end in zip(self.origins, ends, strict=True)]

    def __len__(self) -> int:
        return len(self.crops)

    def put(self, index: int, mask: np.ndarray, origin: tuple[int, ...] | None = None) -> None:
        """Copy what of `mask` (an array of the map's ndim placed with its first element at `origin`, default
        the map's corner) lies in box `index`'s region into that box's mask."""
        at = np.zeros(len(self.shape), np.int64) if origin is None else np.asarray(origin, np.int64)
        crop, crop_at = self.crops[index], self.origins[index]
        low = np.maximum(at, crop_at)
        high = np.minimum(at + mask.shape, crop_at + crop.shape)
        if np.any(high <= low):
            return
        into = tuple(slice(a, b) for a, b in zip(low - crop_at, high - crop_at, strict=True))
        source = tuple(slice(a, b) for a, b in zip(low - at, high - at, strict=True))
        crop[into] = mask[source]

    def put_slice(self, index: int, z: int, mask: np.ndarray) -> None:
        """Box `index`'s (H, W) mask on slice z of a (D, H, W) map."""
        self.put(index, mask[None], (z, 0, 0))

    def set_mask(self, index: int, mask: np.ndarray) -> None:
        """Box `index`'s whole mask, of its region's shape (`crops[index].shape`)."""
        self.crops[index][...] = mask

    def region(self, index: int) -> tuple[slice, ...]:
        """Box `index`'s region of the label map."""
        origin = self.origins[index]
        return tuple(slice(int(o), int(o) + n) for o, n in zip(origin, self.crops[index].shape, strict=True))

    def label_map(self, dtype: np.dtype | type, overlap: str = "smaller_box", max_take: float = 0.5) -> np.ndarray:
        """The label map (label i + 1 for box i, 0 background) of `dtype`, contested voxels given by
        `overlap` (OVERLAP_RULES): later_box paints in box order; smaller_box paints from the largest box to
        the smallest (equal volumes: box order), each mask taking the voxels of those painted before
        except where it would take more than `max_take` of one mask's voxels."""
        if overlap not in OVERLAP_RULES:
            raise ValueError(f"unknown overlap rule {overlap!r} (known: {', '.join(OVERLAP_RULES)})")
        segs = np.zeros(self.shape, dtype)
        count = len(self.crops)
        if overlap == "later_box":
            for index in range(count):
                self._paint(segs, index, None)
            return segs
        sizes = np.array([int(crop.sum()) for crop in self.crops], np.int64)
        for index in sorted(range(count), key=lambda i: (-int(self.box_volumes[i]), i)):
            self._paint(segs, index, (sizes, max_take))
        return segs

    def _paint(self, segs: np.ndarray, index: int, guard: tuple[np.ndarray, float] | None) -> None:
        mask = self.crops[index]
        target = segs[self.region(index)]
        if guard is not None:
            sizes, max_take = guard
            claimed = np.bincount(target[mask].astype(np.int64), minlength=len(self.crops) + 1)[1:]
            for owner in np.flatnonzero(claimed > max_take * sizes):
                mask = mask & (target != owner + 1)  # near-copies: the larger box keeps its voxels
        target[mask] = index + 1

    def nbytes(self) -> int:
        """Bytes the masks hold."""
        return sum(crop.nbytes for crop in self.crops)


def box_masks_bytes(shape: tuple[int, ...], lows: np.ndarray, highs: np.ndarray, clip: bool, label_bytes: int) -> int:
    """Upper bound of what BoxMasks and its label_map allocate besides the label map: every region's mask,
    and for the largest region two bool temporaries and its claimed labels as int64."""
    if len(lows) == 0:
        return 0
    sizes = (np.asarray(highs) - np.asarray(lows) + 1).prod(axis=1) if clip else np.full(len(lows), math.prod(shape))
    largest = int(np.max(sizes))
    return int(np.sum(sizes)) + largest * (2 + 8 + label_bytes)
