"""3D strategy: middle-slice box propagation.

Per box: start at the middle slice of its z range with the given box; walk up to z_max and down to
z_min, prompting each slice with the bounding box of the neighbouring slice's mask grown by a small
margin, or with the original box where that mask is empty. With `core` > 0 the slices within
core x half the z range of the middle one are all prompted with the given box (the model
under-segments, and a box grown from an under-segmented mask shrinks slice after slice); propagation
takes over beyond, where the object narrows towards its ends. With `follow`, each slice beyond the
middle one is decoded with both prompts, the given box and the one grown from the neighbour's mask
(kept inside the given box), and keeps the steadier mask (SAM's stability score): a 3D box is the union
of a structure's cross-sections, loose on most slices of a liver or a vessel, tight on a tumour's, and
the choice is made per box and per slice. All boxes advance slice by slice together, so each slice is
encoded once (through the predictor's embedding cache) and decoded in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from models.boxes import clip_to_boxes, grow_box, mask_bbox
from router.strategies import (
    BoxPredictor,
    EmbeddingPredictor,
    OnSlice,
    ScoredBoxPredictor,
    Strategy,
    StrategyParams,
)
from router.strategies.footprint import EmbeddingRoom, covered, max_overlap, most_active, slice_bytes
from router.strategies.interpolation import interpolate_masks, mask_dice
from router.strategies.labels import BoxMasks, MaskParams, box_masks_bytes, label_dtype
from router.strategies.zoom import small_boxes

if TYPE_CHECKING:
    from models.predictor import Embedding

# The challenge baseline grows the previous slice's box by 3 px in its 256-pixel frame.
GROW_FRACTION = 3 / 256


def middle_slices(boxes: np.ndarray) -> np.ndarray:
    """(N, 6) boxes -> (N,) middle slice index of each box's inclusive z range."""
    return boxes[:, 2] + (boxes[:, 5] - boxes[:, 2]) // 2


# The largest skip step a table may set. A sweep holds that many slices' masks at once (sweep_bytes counts
# them), so the bound keeps the memory estimate finite; 8 is also the largest step measured (docs/results.md,
# "Slice skipping"): beyond it, slices would take masks interpolated over gaps nothing here has scored.
MAX_SKIP_STEP = 8


@dataclass(frozen=True, kw_only=True)
class SkipParams(StrategyParams):
    """When a slice may take its masks by interpolation instead of an encoder pass: the skip_* fields of the
    strategies that sweep (propagate, triplanar_vote), by a routing table's names; the defaults are what
    router/routes.toml ships for [default.propagate] (EVERY_SLICE: no slice skipped).

    Along a sweep, where every box is prompted with its given box (propagate_masks' core), every
    `skip_step`-th slice is decoded, and the first and last of every stretch where the same boxes are active.
    Between two decoded slices, the slices take masks interpolated from theirs
    (router.strategies.interpolation) when every box's two masks agree: Dice >= `skip_dice` and each at
    least `skip_min_area` pixels, or both empty. Where they disagree, the slice halfway is decoded and each
    half is settled the same way (bisection), down to neighbouring slices. skip_step 1 decodes every slice.
    Beyond the core each prompt comes from the slice decoded before, so the decoded slices there are
    `skip_outer_step` apart (1: every slice); where two disagree, every slice between is decoded in order, as
    without skipping. With `skip_blend_outer`, the slices between are instead always decoded in order,
    prompted as propagation does, on a blend of the two decoded slices' embeddings (a decoder pass each, no
    encoder pass: checking that the two agree first cost passes and gained nothing, docs/results.md "Slice
    skipping"); with `skip_blend_core`, so are the core's slices between two that disagree (no bisection).
    """

    skip_step: int = 4
    skip_dice: float = 0.85
    skip_min_area: int = 50
    skip_outer_step: int = 2
    skip_blend_outer: bool = True
    skip_blend_core: bool = False

    def __post_init__(self) -> None:
        """Raise ValueError unless 1 <= skip_step, skip_outer_step <= MAX_SKIP_STEP, 0 <= skip_dice <= 1,
        skip_min_area >= 0 and the two skip_blend_* are bools."""
        super().__post_init__()
        for name, step in (("skip_step", self.skip_step), ("skip_outer_step", self.skip_outer_step)):
            if not (isinstance(step, int) and 1 <= step <= MAX_SKIP_STEP):
                raise ValueError(f"{name} must be an integer in [1, {MAX_SKIP_STEP}], got {step}")
        if not 0.0 <= self.skip_dice <= 1.0:
            raise ValueError(f"skip_dice must be in [0, 1], got {self.skip_dice}")
        if not (isinstance(self.skip_min_area, int) and self.skip_min_area >= 0):
            raise ValueError(f"skip_min_area must be a non-negative integer, got {self.skip_min_area}")
        for name, flag in (("skip_blend_outer", self.skip_blend_outer), ("skip_blend_core", self.skip_blend_core)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag}")

    def agree(self, first: np.ndarray, last: np.ndarray) -> bool:
        """Whether the slices between (H, W) bool masks `first` and `last` of one box may be interpolated."""
        sizes = int(first.sum()), int(last.sum())
        if sizes == (0, 0):
            return True
        return min(sizes) >= max(self.skip_min_area, 1) and mask_dice(first, last) >= self.skip_dice


# Every slice decoded (skip_step and skip_outer_step 1: no slice lies between two decoded ones, so the other
# fields never apply): what propagate_masks does when not told otherwise.
EVERY_SLICE = SkipParams(skip_step=1, skip_outer_step=1)


def _stretches(slices: range, active_at: Callable[[int], np.ndarray]) -> Iterator[tuple[list[int], np.ndarray]]:
    """Split a sweep's slices into maximal runs with the same active boxes: (slices of the run, box indices)."""
    run: list[int] = []
    current: np.ndarray | None = None
    for z in slices:
        active = np.flatnonzero(active_at(z))
        if current is not None and not np.array_equal(active, current):
            if current.size:
                yield run, current
            run = []
        run.append(z)
        current = active
    if current is not None and current.size and run:
        yield run, current


@dataclass(frozen=True, kw_only=True)
class CoreCheckParams(StrategyParams):
    """When a core slice gives up the given box: the core_* fields of the strategies that sweep (propagate,
    triplanar_vote), by a routing table's names; the defaults are what router/routes.toml ships for
    [default.propagate] (NO_CORE_CHECK: never).

    Where the given box's mask is unsure (stability score under `core_unsure`), the slice is decoded again with
    the box of the nearest decoded slice's mask, grown and kept inside the given box, and takes that mask where
    it is steadier by at least `core_margin`. Only boxes whose longer side is at least `core_unsure_size` of the
    image's longer side are checked: a mask a few pixels wide is unsure for its size alone (stability compares
    masks thresholded a little above and below, and a small mask is mostly edge). core_unsure 0: never.
    """

    core_unsure: float = 0.0
    core_margin: float = 0.0
    core_unsure_size: float = 0.25

    def __post_init__(self) -> None:
        """Raise ValueError unless core_unsure, core_margin and core_unsure_size are in [0, 1]."""
        super().__post_init__()
        for name, share in (("core_unsure", self.core_unsure), ("core_margin", self.core_margin),
                            ("core_unsure_size", self.core_unsure_size)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share}")


NO_CORE_CHECK = CoreCheckParams()


Yielded = tuple[int, np.ndarray, np.ndarray]  # (z, box indices (K,), masks (K, H, W) bool)
# box index -> the mask box (None: empty) of the last slice decoded for it: what prompts the next slice
Prompts = dict[int, np.ndarray | None]
# yields slices in order; returns the masks of the last one and the prompts after it
Slices = Generator[Yielded, None, tuple[np.ndarray, Prompts]]


class _Propagation:
    """One volume's propagation (propagate_masks): the boxes' geometry and prompts, and the two sweeps.

    A sweep runs over stretches of slices with the same active boxes (_stretches). In each stretch, from
    the first slice outwards: the core (core_slices: every skip_step-th slice decoded, the ones between
    bisected), then beyond it (outer_slices: every skip_outer_step-th slice, the ones between decoded on
    blended embeddings or interpolated). The prompts (Prompts) go along a sweep from one decode to the
    next as an argument and a return value; `mid_bbox` carries the middle slice's from the upward sweep
    to the downward one.
    """

    def __init__(self, volume: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, view: Hashable,
                 on_slice: OnSlice | None, core: float, skip: SkipParams, follow: bool = False,
                 check: CoreCheckParams = NO_CORE_CHECK) -> None:
        self.volume, self.predictor, self.view, self.on_slice, self.skip = volume, predictor, view, on_slice, skip
        self.follow, self.check = follow, check
        self.shape = volume.shape[1:]
        self.margin = GROW_FRACTION * max(self.shape)
        self.boxes_2d = boxes[:, [0, 1, 3, 4]].astype(np.float64)
        self.z_mid = middle_slices(boxes)
        self.core_reach = core * (boxes[:, 5] - boxes[:, 2]) / 2
        checked = ~small_boxes(self.boxes_2d, self.shape, check.core_unsure_size)
        self.checked = checked if check.core_unsure > 0 else np.zeros(len(boxes), bool)
        self.mid_bbox: list[np.ndarray | None] = [None] * len(boxes)

    def embedding_of(self, z: int) -> Embedding:
        """Slice z's embedding, encoded once: the cache serves it again to the decode of slice z."""
        self.predictor.set_image(self.volume[z], key=(self.view, z))
        return cast(EmbeddingPredictor, self.predictor).get_image_embedding()

    def decode(self, z: int, active: np.ndarray, previous: Prompts, upward: bool,
               embedding: Embedding | None = None, gap: int = 1) -> tuple[np.ndarray, Prompts]:
        """Masks (K, H, W) of the `active` boxes on slice z, each prompted from `previous` as propagation
        does (the given box in the core, checked against the neighbour's mask box where `check` says), and the
        prompts after slice z (`previous` is left as it was). `embedding`: decode on it instead of slice z's;
        `gap`: how many slices from z the slice of `previous` lies (the core's checked prompts grow with it)."""
        prompts = np.empty((active.size, 4))
        followed: list[int] = []  # rows that are also decoded with the given box (follow)
        neighbours: dict[int, np.ndarray] = {}  # core rows -> the neighbour's mask box, inside the given box
        for row, index in enumerate(active.tolist()):
            prior = previous.get(index) if (upward or index in previous) else self.mid_bbox[index]
            if abs(z - self.z_mid[index]) <= self.core_reach[index]:  # the middle slice, and the core around it
                prompts[row] = self.boxes_2d[index]
                if self.checked[index] and z != self.z_mid[index] and prior is not None:
                    grown = grow_box(prior, self.margin * gap, self.shape)
                    neighbours[row] = intersect_boxes(grown, self.boxes_2d[index])
                continue
            if prior is None:
                prompts[row] = self.boxes_2d[index]
            elif self.follow:
                prompts[row] = intersect_boxes(grow_box(prior, self.margin, self.shape), self.boxes_2d[index])
                followed.append(row)
            else:
                prompts[row] = grow_box(prior, self.margin, self.shape)
        if embedding is None:
            self.predictor.set_image(self.volume[z], key=(self.view, z))
        else:
            cast(EmbeddingPredictor, self.predictor).set_image_embedding(embedding)
        if followed:
            given = self.boxes_2d[active[followed]]
            both, stability = cast(ScoredBoxPredictor, self.predictor).predict_scored(np.concatenate([prompts, given]))
            masks = both[: active.size]
            steadier = stability[active.size :] > stability[followed]  # the given box's mask is the steadier
            masks[np.array(followed)[steadier]] = both[active.size :][steadier]
        elif neighbours:
            masks = self.checked_core(prompts, neighbours)
        else:
            masks = self.predictor.predict(prompts)
        after = dict(previous)
        for row, index in enumerate(active.tolist()):
            after[index] = mask_bbox(masks[row])
            if upward and z == self.z_mid[index]:
                self.mid_bbox[index] = after[index]
        return masks, after

    def checked_core(self, prompts: np.ndarray, neighbours: dict[int, np.ndarray]) -> np.ndarray:
        """Masks (K, H, W) of (K, 4) `prompts` on the current slice, where a core row of `neighbours` whose
        mask is unsure (stability under check.core_unsure) takes the mask of its neighbour prompt instead if
        that one is steadier by check.core_margin: a 3D box is loose on the slices where its structure is narrow, and
        the model, unsure there, fills it with more than the structure (docs/results.md, "Whole scans: 3D
        prompts")."""
        scored = cast(ScoredBoxPredictor, self.predictor)
        masks, stability = scored.predict_scored(prompts)
        unsure = [row for row in neighbours if stability[row] < self.check.core_unsure]
        if unsure:
            alternatives, steadiness = scored.predict_scored(np.stack([neighbours[row] for row in unsure]))
            for row, mask, steady in zip(unsure, alternatives, steadiness, strict=True):
                if steady >= stability[row] + self.check.core_margin:
                    masks[row] = mask
        return masks

    def emit(self, z: int, active: np.ndarray, masks: np.ndarray) -> Yielded:
        if self.on_slice is not None:
            self.on_slice()
        return z, active, masks

    def in_core(self, z: int, active: np.ndarray) -> bool:
        return bool(np.all(np.abs(z - self.z_mid[active]) <= self.core_reach[active]))

    def core_end(self, run: list[int], active: np.ndarray) -> int:
        """The last position of `run` in the core (-1: none). The core is a prefix of every stretch, as
        sweeps run outwards from the middle slices."""
        if not self.in_core(run[0], active):
            return -1
        end = 0
        while end + 1 < len(run) and self.in_core(run[end + 1], active):
            end += 1
        return end

    def bisect(self, run: list[int], active: np.ndarray, decoded: dict[int, np.ndarray], low: int, high: int) -> None:
        """Fill `decoded` (position in run -> masks) for every position between `low` and `high`, both
        decoded, in the core: interpolated where the two agree, else decoded on blends (blend_core) or bisected."""
        if high - low < 2:
            return
        if all(self.skip.agree(a, b) for a, b in zip(decoded[low], decoded[high], strict=True)):
            pairs = zip(decoded[low], decoded[high], strict=True)
            between = [interpolate_masks(a, b, high - low - 1) for a, b in pairs]
            for step, position in enumerate(range(low + 1, high)):
                decoded[position] = np.stack([box_masks[step] for box_masks in between])
            return
        if self.skip.skip_blend_core:
            first, last = self.embedding_of(run[low]), self.embedding_of(run[high])
            for position in range(low + 1, high):
                blend = first.blend(last, (position - low) / (high - low))
                decoded[position] = self.decode(run[position], active, {}, True, blend)[0]
            return
        middle = (low + high) // 2
        # core prompts need no previous slice; the core check prompts from the nearer decoded one
        nearer = {index: mask_bbox(decoded[low][row]) for row, index in enumerate(active.tolist())
                  if self.checked[index]}
        decoded[middle] = self.decode(run[middle], active, nearer, True, gap=middle - low)[0]
        self.bisect(run, active, decoded, low, middle)
        self.bisect(run, active, decoded, middle, high)

    def core_slices(self, run: list[int], active: np.ndarray, previous: Prompts, upward: bool, position: int,
                    target: int, masks: np.ndarray) -> Slices:
        """The core's slices at positions position+1..target of `run` (`masks`: position's): `target`
        decoded, the ones between bisected."""
        last, after = self.decode(run[target], active, previous, upward, gap=target - position)
        decoded = {position: masks, target: last}
        self.bisect(run, active, decoded, position, target)
        for at in range(position + 1, target + 1):
            yield self.emit(run[at], active, decoded[at])
        return last, after

    def outer_slices(self, run: list[int], active: np.ndarray, previous: Prompts, upward: bool, position: int,
                     target: int, masks: np.ndarray) -> Slices:
        """The slices beyond the core at positions position+1..target of `run` (`masks`: position's), each
        prompted from the one before: with blend_outer, the ones between decoded on blends of the two ends'
        embeddings; else interpolated where the ends agree, every slice decoded in order where they do not."""
        if target - position > 1 and self.skip.skip_blend_outer:
            near, far = self.embedding_of(run[position]), self.embedding_of(run[target])
            for offset, z in enumerate(run[position + 1 : target], 1):
                blend = near.blend(far, offset / (target - position))
                masks, previous = self.decode(z, active, previous, upward, blend)
                yield self.emit(z, active, masks)
            masks, previous = self.decode(run[target], active, previous, upward)
            yield self.emit(run[target], active, masks)
            return masks, previous
        if target - position > 1:
            last, after = self.decode(run[target], active, previous, upward)
            if all(self.skip.agree(a, b) for a, b in zip(masks, last, strict=True)):
                between = [interpolate_masks(a, b, target - position - 1) for a, b in zip(masks, last, strict=True)]
                for step, z in enumerate(run[position + 1 : target]):
                    yield self.emit(z, active, np.stack([box_masks[step] for box_masks in between]))
                yield self.emit(run[target], active, last)
                return last, after
            # they disagree: every slice up to the target decoded in order, from the prompts at `position`
        for z in run[position + 1 : target + 1]:
            masks, previous = self.decode(z, active, previous, upward)
            yield self.emit(z, active, masks)
        return masks, previous

    def sweep(self, slices: range, active_at: Callable[[int], np.ndarray], upward: bool) -> Iterator[Yielded]:
        """Every (slice, active boxes, masks) of one sweep, stretch by stretch, in `slices`' order."""
        previous: Prompts = {}
        for run, active in _stretches(slices, active_at):
            masks, previous = self.decode(run[0], active, previous, upward)
            yield self.emit(run[0], active, masks)
            core_end, position = self.core_end(run, active), 0
            while position < len(run) - 1:
                if position < core_end:
                    target = min(position + self.skip.skip_step, core_end)
                    masks, previous = yield from self.core_slices(run, active, previous, upward, position, target,
                                                                  masks)
                else:
                    target = min(position + self.skip.skip_outer_step, len(run) - 1)
                    masks, previous = yield from self.outer_slices(run, active, previous, upward, position, target,
                                                                   masks)
                position = target


def propagate_masks(
    volume: np.ndarray,
    boxes: np.ndarray,
    predictor: BoxPredictor,
    view: Hashable = "axial",
    on_slice: OnSlice | None = None,
    core: float = 0.0,
    skip: SkipParams = EVERY_SLICE,
    follow: bool = False,
    check: CoreCheckParams = NO_CORE_CHECK,
) -> Iterator[Yielded]:
    """Yield (z, box_indices (K,), masks (K, H, W) bool) for every slice some box covers.

    volume: (D, H, W) uint8; boxes: (N, 6) [x0, y0, z0, x1, y1, z1] inclusive, inside the volume.
    Each (box, slice) pair is yielded exactly once, all boxes of a slice together. `view` keys the
    predictor's embedding cache. core: slices with |z - z_mid| <= core x (z1 - z0) / 2 are prompted with
    the given box (0: the middle slice only, 1: every slice). skip: which slices may be interpolated
    (SkipParams; by default none are: EVERY_SLICE). follow: beyond the core, each box is decoded with the given box
    and with the neighbour's mask box (inside the given box) and keeps the mask of higher stability
    (the predictor must be a ScoredBoxPredictor); else with the neighbour's mask box only. check: when a core
    slice takes the nearest decoded slice's mask box instead of the given box (CoreCheckParams; a
    ScoredBoxPredictor unless `check.core_unsure` is 0).
    """
    if len(boxes) == 0:
        return
    walk = _Propagation(volume, boxes, predictor, view, on_slice, core, skip, follow, check)
    z_mid, z_min, z_max = walk.z_mid, boxes[:, 2], boxes[:, 5]
    # Upward from each box's middle slice (inclusive) to z_max, then downward from z_mid - 1 to z_min.
    yield from walk.sweep(range(z_mid.min(), z_max.max() + 1), lambda z: (z_mid <= z) & (z <= z_max), True)
    yield from walk.sweep(range(z_mid.max() - 1, z_min.min() - 1, -1), lambda z: (z_min <= z) & (z < z_mid), False)


def intersect_boxes(box: np.ndarray, within: np.ndarray) -> np.ndarray:
    """(4,) [x0, y0, x1, y1] `box` cut to the (4,) box `within`; `within` itself where they do not meet."""
    low, high = np.maximum(box[:2], within[:2]), np.minimum(box[2:], within[2:])
    if np.any(low > high):
        return within.astype(np.float64)
    return np.concatenate([low, high]).astype(np.float64)


def propagation_steps(boxes: np.ndarray) -> int:
    """How many slice steps propagate_masks takes: slices of the upward plus the downward sweep."""
    z_mid = middle_slices(boxes)
    up = {z for mid, top in zip(z_mid, boxes[:, 5], strict=True) for z in range(mid, top + 1)}
    down = {z for low, mid in zip(boxes[:, 2], z_mid, strict=True) for z in range(low, mid)}
    return len(up) + len(down)


@dataclass(frozen=True, kw_only=True)
class PropagateParams(SkipParams, CoreCheckParams, MaskParams):
    """propagate's parameters ([<section>.propagate]); the defaults are what router/routes.toml ships.

    core: slices within core x half the z range of each box's middle slice are prompted with the given
    box (propagate_masks); the core_* fields (CoreCheckParams): where a core slice's mask from the given box
    gives way to one from the nearest decoded slice's mask box;
    follow: beyond the core, the steadier of the two prompts' masks; stop_*, one_box_*: one 2D box without
    a z range (segment_from_slice); the skip_* fields (SkipParams): which slices are not encoded, and how
    they get their masks (interpolated, or decoded on blended embeddings); clip_to_box, overlap, overlap_*:
    how masks go into the label map (MaskParams), the box being the 3D one.
    """

    core: float = 0.5
    follow: bool = False
    stop_overlap: float = 0.5
    stop_stability: float = 0.6
    one_box_step: int = 4
    one_box_stability: float = 0.85

    def __post_init__(self) -> None:
        """Raise ValueError unless 0 <= core <= 1, stop_* and one_box_stability are in [0, 1], follow is a
        bool, 1 <= one_box_step <= MAX_SKIP_STEP and the skip_* and core_* fields are valid (SkipParams,
        CoreCheckParams)."""
        if not 0.0 <= self.core <= 1.0:
            raise ValueError(f"core must be in [0, 1], got {self.core}")
        if not isinstance(self.follow, bool):
            raise ValueError(f"follow must be true or false, got {self.follow}")
        for name, share in (("stop_overlap", self.stop_overlap), ("stop_stability", self.stop_stability),
                            ("one_box_stability", self.one_box_stability)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share}")
        if not (isinstance(self.one_box_step, int) and 1 <= self.one_box_step <= MAX_SKIP_STEP):
            raise ValueError(f"one_box_step must be an integer in [1, {MAX_SKIP_STEP}], got {self.one_box_step}")
        super().__post_init__()


def segment_propagate3d(
    volume: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, params: PropagateParams = PropagateParams(),
    on_slice: OnSlice | None = None,
) -> np.ndarray:
    """(D, H, W) uint8 volume, (N, 6) boxes -> (D, H, W) label map (label i for boxes[i-1]), by
    propagate_masks with the core and slice skipping of `params`, masks resolved as `params` say (MaskParams)."""
    masks_of = BoxMasks(volume.shape, *box_regions_3d(boxes), params.clip_to_box)
    sweep = propagate_masks(volume, boxes, predictor, on_slice=on_slice, core=params.core, skip=params,
                            follow=params.follow, check=params)
    for z, active, masks in sweep:
        for index, mask in zip(active.tolist(), masks, strict=True):
            masks_of.put_slice(index, z, mask)
    return params.resolve(masks_of, label_dtype(len(boxes)))


def continues(previous: np.ndarray, mask: np.ndarray, stability: float, params: PropagateParams) -> bool:
    """Whether (H, W) bool `mask`, decoded on the slice after `previous`'s, is still the same structure: not
    empty, at least `params.stop_overlap` of it over `previous` (a structure moves little from slice to slice)
    and its stability score at least `params.stop_stability` (past a structure's end the model still returns
    a mask where the prompt points, but one that changes with the threshold)."""
    area = int(mask.sum())
    overlap = int(np.count_nonzero(mask & previous))
    return area > 0 and overlap >= params.stop_overlap * area and stability >= params.stop_stability


def segment_from_slice(
    volume: np.ndarray, box: np.ndarray, z: int, predictor: ScoredBoxPredictor,
    params: PropagateParams = PropagateParams(), view: Hashable = "axial",
    down: ScoredBoxPredictor | None = None,
) -> np.ndarray:
    """(D, H, W) uint8 volume, a (4,) [x0, y0, x1, y1] inclusive box on slice `z` -> (D, H, W) bool: the object
    the box prompts on slice z, followed both ways until it ends (no z range is given).

    Slice z's mask is kept inside the box. From each decoded slice the walk looks `params.one_box_step` slices
    ahead: that slice is prompted with the mask's box grown by GROW_FRACTION of the image per slice of the
    gap, and where its mask is sure (stability at least `params.one_box_stability`: past a structure's end
    the model still fills a loose prompt, unsurely, and such masks agree with each other), `continues` the
    decoded one and agrees with it (SkipParams.agree: skip_dice, skip_min_area), the slices between take
    interpolated masks (router.strategies.interpolation) and are neither encoded nor decoded. Elsewhere, and
    always with one_box_step 1, the slices are walked one at a time: each prompted with the previous mask's
    box grown by GROW_FRACTION and its mask kept inside that prompt, and the sweep stops at the first mask
    that does not `continues` the previous one (params.stop_overlap, params.stop_stability), or at the
    volume's end. Every slice visited is encoded once (the predictor's cache, keyed (view, slice)).

    `down`: a second predictor (on the same embeddings) that walks the sweep towards slice 0 in a thread
    while `predictor` walks the other: the two sweeps share nothing but the first slice's mask, so the
    object is the same; it is faster where the two predictors decode at once (on two decoder streams).
    """
    depth, height, width = volume.shape
    if not 0 <= z < depth:
        raise ValueError(f"slice {z} is outside a volume of {depth} slices")
    shape = (height, width)
    box = np.clip(np.asarray(box, np.float64).reshape(4), 0, [width - 1, height - 1, width - 1, height - 1])
    margin = GROW_FRACTION * max(shape)
    out = np.zeros(volume.shape, bool)

    def decode(at: int, prompt: np.ndarray, predictor: ScoredBoxPredictor = predictor) -> tuple[np.ndarray, float]:
        """Slice `at`'s mask prompted with (4,) `prompt` and kept inside it, and its stability."""
        predictor.set_image(volume[at], key=(view, at))
        masks, stability = cast(ScoredBoxPredictor, predictor).predict_scored(prompt[None])
        return clip_to_boxes(masks, prompt[None])[0], float(stability[0])

    def grown(previous: np.ndarray, gap: int) -> np.ndarray:
        """The prompt `gap` slices on from mask `previous`: its box grown by the margin per slice."""
        return grow_box(cast(np.ndarray, mask_bbox(previous)), margin * gap, shape)

    def sweep(step: int, predictor: ScoredBoxPredictor) -> None:
        """Slices z + step, z + 2 step, ... into `out` until the structure or the volume ends."""
        previous, at, ended = first, z, not first.any()
        while not ended:
            ahead = min(max(at + step * params.one_box_step, 0), depth - 1)
            gap = abs(ahead - at)
            if gap == 0:  # the volume's end
                break
            if gap > 1:
                mask, stability = decode(ahead, grown(previous, gap), predictor)
                sure = stability >= params.one_box_stability
                if sure and continues(previous, mask, stability, params) and params.agree(previous, mask):
                    out[at + step : ahead : step] = interpolate_masks(previous, mask, gap - 1)
                    out[ahead] = previous = mask
                    at = ahead
                    continue
            for near in range(at + step, ahead + step, step):
                mask, stability = decode(near, grown(previous, 1), predictor)
                ended = not continues(previous, mask, stability, params)  # False on an empty mask too
                if ended:  # the structure has ended: this sweep stops
                    break
                out[near] = previous = mask
            at = ahead

    out[z] = first = decode(z, box)[0]
    if down is None:
        sweep(1, predictor)
        sweep(-1, predictor)
    else:  # the sweeps write disjoint slices of `out`
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seg-sweep-down") as other:
            downward = other.submit(sweep, -1, down)
            sweep(1, predictor)
            downward.result()
    return out


def box_regions_3d(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 6) [x0, y0, z0, x1, y1, z1] boxes inside a volume -> their (N, 3) inclusive (z, y, x) lows and highs."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 6)
    return boxes[:, [2, 1, 0]], boxes[:, [5, 4, 3]]


def sweep_bytes(pixels: int, masks: int) -> int:
    """A sweep's slice work (slice_bytes), with the masks of up to MAX_SKIP_STEP slices held between two
    decoded ones and the two float32 distance maps that interpolate them (SkipParams)."""
    return slice_bytes(pixels, masks) + MAX_SKIP_STEP * masks * pixels + 2 * 4 * pixels


class Propagate(Strategy[PropagateParams]):
    """Middle-slice box propagation along the volume's z axis (segment_propagate3d)."""

    name = "propagate"
    dim = 3
    params = PropagateParams

    def run(self, image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: PropagateParams,
            on_slice: OnSlice | None = None) -> np.ndarray:
        return segment_propagate3d(image, boxes, predictor, params, on_slice)

    def working_bytes(self, shape: tuple[int, ...], boxes: np.ndarray, params: PropagateParams,
                      embeddings: EmbeddingRoom) -> int:
        """On a (D, H, W) volume: label map, one sweep's masks, each box's kept mask (BoxMasks), the cached
        embeddings of its slices."""
        depth, height, width = shape
        label_bytes = np.dtype(label_dtype(len(boxes))).itemsize
        active = max_overlap(boxes[:, 2], boxes[:, 5], depth)
        cache = embeddings.cached(covered(boxes[:, 2], boxes[:, 5], depth))
        kept = box_masks_bytes(shape, *box_regions_3d(boxes), params.clip_to_box, label_bytes)
        return label_bytes * math.prod(shape) + sweep_bytes(height * width, active) + cache + kept

    def boxes_per_call(self, shape: tuple[int, ...], boxes: np.ndarray, params: PropagateParams) -> int:
        """The boxes active on one slice, twice with `follow` (two prompts each); counted on all three axes (an
        upper bound of the axial sweep's)."""
        return most_active(shape, boxes) * (2 if params.follow else 1)

    def slice_count(self, boxes: np.ndarray, params: PropagateParams) -> int:
        return propagation_steps(boxes)
