"""3D strategy for small objects (PET lesions): tri-planar majority voting.

Each box's sub-volume is segmented once per view (axial, coronal, sagittal), each view with
middle-slice propagation and the box projected onto that view's planes; a voxel is kept where the
weighted votes reach `min_votes` (2 of 3 by default). Votes are per object and counted only inside each
box; a voxel that several objects keep goes to one of them by the overlap rule (router.strategies.labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from router.strategies import BoxPredictor, OnSlice, ScoredBoxPredictor, Strategy
from router.strategies.footprint import EmbeddingRoom, covered, most_active
from router.strategies.labels import BoxMasks, box_masks_bytes, label_dtype
from router.strategies.propagate3d import (
    PropagateParams,
    box_regions_3d,
    propagate_masks,
    propagation_steps,
    sweep_bytes,
)

# Axis permutation of a (z, y, x) volume that puts each view's slicing axis first.
VIEW_AXES: dict[str, tuple[int, int, int]] = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
DEFAULT_VIEWS = tuple(VIEW_AXES)


def view_boxes(boxes: np.ndarray, axes: tuple[int, int, int]) -> np.ndarray:
    """(N, 6) [x0, y0, z0, x1, y1, z1] boxes -> the same boxes in a permuted volume's (x, y, z) order."""
    lows = boxes[:, [2, 1, 0]][:, axes]  # (z, y, x) order, then permuted
    highs = boxes[:, [5, 4, 3]][:, axes]
    return np.concatenate([lows[:, ::-1], highs[:, ::-1]], axis=1)


@dataclass(frozen=True, kw_only=True)
class TriplanarParams(PropagateParams):
    """triplanar_vote's parameters ([<section>.triplanar_vote]); the defaults are what router/routes.toml
    ships for PET.

    views: the views that vote (VIEW_AXES), weights: one weight each (None: 1.0 each), min_votes: the
    weighted votes a voxel needs. core and the skip_* fields: those of each view's propagation
    (PropagateParams); here every slice is prompted with the box itself (core 1.0). overlap and
    overlap_*: as propagate's (MaskParams); votes are counted only inside each box, so clip_to_box
    must stay true.
    """

    views: tuple[str, ...] = DEFAULT_VIEWS
    weights: tuple[float, ...] | None = None
    min_votes: float = 2.0
    core: float = 1.0
    skip_step: int = 6
    skip_dice: float = 1.0
    skip_blend_core: bool = True

    def __post_init__(self) -> None:
        """Raise ValueError on core, skip_* or mask values propagation cannot run with, views outside VIEW_AXES,
        not one weight per view, or a min_votes the weights can never reach. Lists become tuples."""
        super().__post_init__()
        if not self.clip_to_box:
            raise ValueError("triplanar_vote counts votes only inside each box: clip_to_box must be true")
        views, weights = self.views, list(self.view_weights)
        if len(weights) != len(views) or any(view not in VIEW_AXES for view in views):
            raise ValueError(f"views must be among {list(VIEW_AXES)} with one weight each, got {views} / {weights}")
        if sum(weights) < self.min_votes:
            raise ValueError(f"min_votes {self.min_votes} can never be reached with weights {weights}")
        object.__setattr__(self, "views", tuple(views))
        object.__setattr__(self, "weights", tuple(weights))

    @property
    def view_weights(self) -> tuple[float, ...]:
        """One weight per view: `weights`, or 1.0 each when none were given."""
        return (1.0,) * len(self.views) if self.weights is None else tuple(self.weights)


def segment_triplanar(
    volume: np.ndarray, boxes: np.ndarray, predictor: BoxPredictor, params: TriplanarParams = TriplanarParams(),
    on_slice: OnSlice | None = None,
) -> np.ndarray:
    """(D, H, W) uint8 volume, (N, 6) boxes -> (D, H, W) label map by per-object weighted voting.

    Each view's propagation (router.strategies.propagate3d.propagate_masks) takes the core and the slice
    skipping (SkipParams) of `params`.
    """
    lows = boxes[:, [2, 1, 0]]  # (z, y, x)
    highs = boxes[:, [5, 4, 3]] + 1
    votes = [np.zeros(tuple(high - low), np.float32) for low, high in zip(lows, highs, strict=True)]

    for view, weight in zip(params.views, params.view_weights, strict=True):
        axes = VIEW_AXES[view]
        view_volume = np.ascontiguousarray(volume.transpose(axes))
        sweep = propagate_masks(view_volume, view_boxes(boxes, axes), predictor, view, on_slice, params.core, params,
                                params.follow, params)
        for s, active, masks in sweep:
            for index, mask in zip(active, masks, strict=True):
                low, high = lows[index][list(axes)], highs[index][list(axes)]
                # transpose() is a view, so this adds into the box's (z, y, x) vote array.
                votes[index].transpose(axes)[s - low[0]] += weight * mask[low[1] : high[1], low[2] : high[2]]

    masks_of = BoxMasks(volume.shape, lows, highs - 1)  # votes are only ever counted inside the box
    for index, box_votes in enumerate(votes):
        masks_of.set_mask(index, box_votes >= params.min_votes)
    return params.resolve(masks_of, label_dtype(len(boxes)))


class TriplanarVote(Strategy[TriplanarParams]):
    """Tri-planar majority voting of per-view propagations (segment_triplanar)."""

    name = "triplanar_vote"
    dim = 3
    params = TriplanarParams

    def run(self, image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: TriplanarParams,
            on_slice: OnSlice | None = None) -> np.ndarray:
        return segment_triplanar(image, boxes, predictor, params, on_slice)

    def working_bytes(self, shape: tuple[int, ...], boxes: np.ndarray, params: TriplanarParams,
                      embeddings: EmbeddingRoom) -> int:
        """On a (D, H, W) volume: two transposed copies, label map, per-box float32 votes (+ bool temporaries of
        the largest), each box's kept mask (BoxMasks), one slice's masks of the widest view, the cache of every
        view."""
        depth, height, width = shape
        voxels = math.prod(shape)
        label_bytes = np.dtype(label_dtype(len(boxes))).itemsize
        sizes = (boxes[:, 3:] - boxes[:, :3] + 1).astype(np.int64)
        box_voxels = sizes.prod(axis=1) if len(boxes) else np.zeros(1, np.int64)
        slice_pixels = max(height * width, depth * width, depth * height)
        slices = sum(covered(boxes[:, axis], boxes[:, axis + 3], extent)
                     for axis, extent in ((2, depth), (1, height), (0, width)))
        kept = box_masks_bytes(shape, *box_regions_3d(boxes), True, label_bytes)
        return ((2 + label_bytes) * voxels + 4 * int(box_voxels.sum()) + 2 * int(box_voxels.max()) + kept
                + sweep_bytes(slice_pixels, most_active(shape, boxes)) + embeddings.cached(slices))

    def boxes_per_call(self, shape: tuple[int, ...], boxes: np.ndarray, params: TriplanarParams) -> int:
        """The boxes active on one slice of the widest view."""
        return most_active(shape, boxes)

    def slice_count(self, boxes: np.ndarray, params: TriplanarParams) -> int:
        """Slices the vote visits: the propagation steps of every view."""
        return sum(propagation_steps(view_boxes(boxes, VIEW_AXES[view])) for view in params.views)
