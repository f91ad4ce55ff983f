"""3D strategy: middle-slice box propagation.

Per box: start at the middle slice of its z range with the given box; walk up to z_max and down to
z_min, prompting each slice with the bounding box of the neighbouring slice's mask grown by a small
margin, or with the original box where that mask is empty. With `core` > 0 the slices within
core x half the z range of the middle one are all prompted with the given box (the model
under-segments, and a box grown from an under-segmented mask shrinks slice after slice); propagation
takes over beyond, where the object narrows towards its ends. All boxes advance slice by slice
together, so each slice is encoded once (through the predictor's embedding cache) and decoded in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator

import numpy as np

from models.boxes import grow_box, mask_bbox
from router.casefile import label_dtype
from router.strategies import BoxPredictor, OnSlice, Strategy
from router.strategies.labels import paint_masks

# The challenge baseline grows the previous slice's box by 3 px in its 256-pixel frame.
GROW_FRACTION = 3 / 256


def middle_slices(boxes: np.ndarray) -> np.ndarray:
    """(N, 6) boxes -> (N,) middle slice index of each box's inclusive z range."""
    return boxes[:, 2] + (boxes[:, 5] - boxes[:, 2]) // 2


def propagate_masks(
    volume: np.ndarray,
    boxes: np.ndarray,
    predictor: BoxPredictor,
    view: Hashable = "axial",
    on_slice: OnSlice | None = None,
    core: float = 0.0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (z, box_indices (K,), masks (K, H, W) bool) for every slice some box covers.

    volume: (D, H, W) uint8; boxes: (N, 6) [x0, y0, z0, x1, y1, z1] inclusive, inside the volume.
    Each (box, slice) pair is yielded exactly once. `view` keys the predictor's embedding cache.
    core: slices with |z - z_mid| <= core x (z1 - z0) / 2 are prompted with the given box (0: the
    middle slice only, 1: every slice).
    """
    height, width = volume.shape[1:]
    margin = GROW_FRACTION * max(height, width)
    boxes_2d = boxes[:, [0, 1, 3, 4]].astype(np.float64)
    z_mid = middle_slices(boxes)
    z_min, z_max = boxes[:, 2], boxes[:, 5]
    core_reach = core * (z_max - z_min) / 2
    mid_bbox: list[np.ndarray | None] = [None] * len(boxes)

    def run_sweep(
        slices: range, active_at: Callable[[int], np.ndarray], upward: bool
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        previous: dict[int, np.ndarray | None] = {}
        for z in slices:
            active = np.flatnonzero(active_at(z))
            if active.size == 0:
                continue
            prompts = np.empty((active.size, 4))
            for row, index in enumerate(active.tolist()):
                if abs(z - z_mid[index]) <= core_reach[index]:  # the middle slice, and the core around it
                    prompts[row] = boxes_2d[index]
                    continue
                prior = previous.get(index) if (upward or z != z_mid[index] - 1) else mid_bbox[index]
                prompts[row] = boxes_2d[index] if prior is None else grow_box(prior, margin, (height, width))
            predictor.set_image(volume[z], key=(view, z))
            masks = predictor.predict(prompts)
            for row, index in enumerate(active.tolist()):
                previous[index] = mask_bbox(masks[row])
                if upward and z == z_mid[index]:
                    mid_bbox[index] = previous[index]
            if on_slice is not None:
                on_slice()
            yield z, active, masks

    if len(boxes) == 0:
        return
    # Upward from each box's middle slice (inclusive) to z_max, then downward from z_mid - 1 to z_min.
    yield from run_sweep(range(z_mid.min(), z_max.max() + 1), lambda z: (z_mid <= z) & (z <= z_max), True)
    yield from run_sweep(range(z_mid.max() - 1, z_min.min() - 1, -1), lambda z: (z_min <= z) & (z < z_mid), False)


def propagation_steps(boxes: np.ndarray) -> int:
    """How many slice steps propagate_masks takes: slices of the upward plus the downward sweep."""
    z_mid = middle_slices(boxes)
    up = {z for mid, top in zip(z_mid, boxes[:, 5], strict=True) for z in range(mid, top + 1)}
    down = {z for low, mid in zip(boxes[:, 2], z_mid, strict=True) for z in range(low, mid)}
    return len(up) + len(down)


def segment_propagate3d(
    volume: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, on_slice: OnSlice | None = None,
    core: float = 0.0,
) -> np.ndarray:
    """(D, H, W) uint8 volume, (N, 6) boxes -> (D, H, W) label map (label i for boxes[i-1]); `core` as in
    propagate_masks."""
    segs = np.zeros(volume.shape, label_dtype(len(boxes)))
    for z, active, masks in propagate_masks(volume, boxes, predictor, on_slice=on_slice, core=core):
        paint_masks(segs[z], masks, active + 1)
    return segs


def check_core(core: float = 0.0) -> None:
    """Raise ValueError unless 0 <= core <= 1."""
    if not 0.0 <= core <= 1.0:
        raise ValueError(f"core must be in [0, 1], got {core}")


def _slice_count(boxes: np.ndarray, **_: object) -> int:
    return propagation_steps(boxes)


STRATEGY = Strategy(
    "propagate", dim=3, run=segment_propagate3d, params=("core",), check=check_core, slice_count=_slice_count
)
