"""3D strategy for small objects (PET lesions): tri-planar majority voting.

Each box's sub-volume is segmented once per view (axial, coronal, sagittal), each view with
middle-slice propagation and the box projected onto that view's planes; a voxel is kept where the
weighted votes reach `min_votes` (2 of 3 by default). Votes are per object, so where views disagree
about which object a voxel belongs to, the object with more votes wins (ties: the later box), never
simply the lowest label. Masks are counted only inside each box, so the result stays inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.casefile import label_dtype
from router.strategies import BoxPredictor, OnSlice, Strategy
from router.strategies.propagate3d import SKIP_PARAMS, check_core, check_skip, propagate_masks, propagation_steps

# Axis permutation of a (z, y, x) volume that puts each view's slicing axis first.
VIEW_AXES: dict[str, tuple[int, int, int]] = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
DEFAULT_VIEWS = tuple(VIEW_AXES)


def view_boxes(boxes: np.ndarray, axes: tuple[int, int, int]) -> np.ndarray:
    """(N, 6) [x0, y0, z0, x1, y1, z1] boxes -> the same boxes in a permuted volume's (x, y, z) order."""
    lows = boxes[:, [2, 1, 0]][:, axes]  # (z, y, x) order, then permuted
    highs = boxes[:, [5, 4, 3]][:, axes]
    return np.concatenate([lows[:, ::-1], highs[:, ::-1]], axis=1)


def check_vote_params(
    views: Sequence[str] = DEFAULT_VIEWS, weights: Sequence[float] | None = None, min_votes: float = 2.0,
    core: float = 0.0, **skip_params: Any,
) -> list[float]:
    """Validate the voting parameters; return the weights (1.0 per view when None). Raises ValueError."""
    check_core(core)
    check_skip(**skip_params)
    weights = [1.0] * len(views) if weights is None else list(weights)
    if len(weights) != len(views) or any(view not in VIEW_AXES for view in views):
        raise ValueError(f"views must be among {list(VIEW_AXES)} with one weight each, got {views} / {weights}")
    if sum(weights) < min_votes:
        raise ValueError(f"min_votes {min_votes} can never be reached with weights {weights}")
    return weights


def segment_triplanar(
    volume: np.ndarray,
    boxes: np.ndarray,
    predictor: BoxPredictor,
    views: Sequence[str] = DEFAULT_VIEWS,
    weights: Sequence[float] | None = None,
    min_votes: float = 2.0,
    on_slice: OnSlice | None = None,
    core: float = 0.0,
    **skip_params: Any,
) -> np.ndarray:
    """(D, H, W) uint8 volume, (N, 6) boxes -> (D, H, W) label map by per-object weighted voting.

    core: each view's propagation prompts the middle core x half of the box's range with the box
    itself (router.strategies.propagate3d.propagate_masks); skip_params (SKIP_PARAMS, check_skip's):
    which slices of each view take their masks by interpolation (router.strategies.propagate3d.SliceSkip).
    """
    check_core(core)
    weights = check_vote_params(views, weights, min_votes)
    skip = check_skip(**skip_params)
    lows = boxes[:, [2, 1, 0]]  # (z, y, x)
    highs = boxes[:, [5, 4, 3]] + 1
    votes = [np.zeros(tuple(high - low), np.float32) for low, high in zip(lows, highs, strict=True)]

    for view, weight in zip(views, weights, strict=True):
        axes = VIEW_AXES[view]
        view_volume = np.ascontiguousarray(volume.transpose(axes))
        sweep = propagate_masks(view_volume, view_boxes(boxes, axes), predictor, view, on_slice, core, skip)
        for s, active, masks in sweep:
            for index, mask in zip(active, masks, strict=True):
                low, high = lows[index][list(axes)], highs[index][list(axes)]
                # transpose() is a view, so this adds into the box's (z, y, x) vote array.
                votes[index].transpose(axes)[s - low[0]] += weight * mask[low[1] : high[1], low[2] : high[2]]

    segs = np.zeros(volume.shape, label_dtype(len(boxes)))
    best = np.zeros(volume.shape, np.float32)
    for index, box_votes in enumerate(votes):
        region = tuple(slice(lo, hi) for lo, hi in zip(lows[index], highs[index], strict=True))
        wins = (box_votes >= min_votes) & (box_votes >= best[region])
        segs[region][wins] = index + 1
        best[region][wins] = box_votes[wins]
    return segs


def vote_slice_count(boxes: np.ndarray, views: Sequence[str] = DEFAULT_VIEWS, **_: object) -> int:
    """Slices the vote visits: the propagation steps of every view."""
    return sum(propagation_steps(view_boxes(boxes, VIEW_AXES[view])) for view in views)


STRATEGY = Strategy(
    "triplanar_vote", dim=3, run=segment_triplanar, params=("views", "weights", "min_votes", "core", *SKIP_PARAMS),
    check=check_vote_params, slice_count=vote_slice_count,
)
