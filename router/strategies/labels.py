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
# smaller_box: the box of smaller volume wins (a lesion in its organ, an organ in a vessel tree's box), except
#   over near-copies: where two boxes nearly coincide (`overlap_same_box`) and one mask would take more than
#   `overlap_max_take` of the other's voxels, the larger box keeps them.
OVERLAP_RULES = ("smaller_box", "later_box")


def label_dtype(num_boxes: int) -> type[np.unsignedinteger]:
    """The label map's dtype for `num_boxes` boxes: uint8 holds labels up to 255; more boxes need uint16."""
    return np.uint8 if num_boxes <= 255 else np.uint16


@dataclass(frozen=True, kw_only=True)
class MaskParams(StrategyParams):
    """What becomes of each box's mask on its way into the label map (a field of every strategy's parameters).

    clip_to_box: a box's mask keeps only the voxels inside its box (the prompt says the object is there).
    overlap: who takes a voxel that several masks claim (OVERLAP_RULES).
    overlap_max_take, overlap_same_box: with smaller_box, a box whose volume is at least `overlap_same_box` of a
        larger one's tells nothing of which structure lies inside which (a necrotic core's box and its
        enhancing tumour's); where its mask would take more than `overlap_max_take` of that larger one's
        voxels (two near-copies of one blob), the larger box keeps them. A clearly smaller box (the left
        ventricle in the myocardium's) wins whatever it takes: a larger box's mask lying mostly inside a much
        smaller box is the wrong one.
    """

    clip_to_box: bool = True
    overlap: str = "smaller_box"
    overlap_max_take: float = 0.5
    overlap_same_box: float = 0.8

    def __post_init__(self) -> None:
        """Raise ValueError unless clip_to_box is a bool, overlap one of OVERLAP_RULES and
        overlap_max_take and overlap_same_box in [0, 1]."""
        super().__post_init__()
        if not isinstance(self.clip_to_box, bool):
            raise ValueError(f"clip_to_box must be true or false, got {self.clip_to_box}")
        if self.overlap not in OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {list(OVERLAP_RULES)}, got {self.overlap!r}")
        for name, value in (("overlap_max_take", self.overlap_max_take), ("overlap_same_box", self.overlap_same_box)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    def resolve(self, masks: BoxMasks, dtype: np.dtype | type) -> np.ndarray:
        """`masks`' label map of `dtype` by these parameters' rule (BoxMasks.label_map)."""
        return masks.label_map(dtype, self.overlap, self.overlap_max_take, self.overlap_same_box)


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

    def label_map(self, dtype: np.dtype | type, overlap: str = "smaller_box", max_take: float = 0.5,
                  same_box: float = 0.8) -> np.ndarray:
        """The label map (label i + 1 for box i, 0 background) of `dtype`, contested voxels given by
        `overlap` (OVERLAP_RULES): later_box paints in box order; smaller_box paints from the largest box to
        the smallest (equal volumes: box order), each mask taking the voxels of those painted before except
        where its box has at least `same_box` of that one's volume and it would take more than `max_take` of
        that one's voxels (MaskParams)."""
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
            self._paint(segs, index, (sizes, max_take, same_box))
        return segs

    def _paint(self, segs: np.ndarray, index: int, guard: tuple[np.ndarray, float, float] | None) -> None:
        mask = self.crops[index]
        target = segs[self.region(index)]
        if guard is not None:
            sizes, max_take, same_box = guard
            claimed = np.bincount(target[mask].astype(np.int64), minlength=len(self.crops) + 1)[1:]
            same = self.box_volumes[index] >= same_box * self.box_volumes
            for owner in np.flatnonzero((claimed > max_take * sizes) & same):
                mask = mask & (target != owner + 1)  # near-copies: the larger box keeps its voxels
        target[mask] = index + 1


def box_masks_bytes(shape: tuple[int, ...], lows: np.ndarray, highs: np.ndarray, clip: bool, label_bytes: int) -> int:
    """Upper bound of what BoxMasks and its label_map allocate besides the label map: every region's mask,
    and for the largest region two bool temporaries and its claimed labels as int64."""
    if len(lows) == 0:
        return 0
    sizes = (np.asarray(highs) - np.asarray(lows) + 1).prod(axis=1) if clip else np.full(len(lows), math.prod(shape))
    largest = int(np.max(sizes))
    return int(np.sum(sizes)) + largest * (2 + 8 + label_bytes)
