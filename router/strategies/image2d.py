"""2D strategy: one encoder pass per image, all boxes decoded in batches; small boxes whose masks are
doubtful decoded again in zoomed crops (router.strategies.zoom), a few encoder passes more.

Image2dParams' defaults are what router/routes.toml ships; measured: docs/results.md, "Zoom only where in doubt".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.boxes import clip_to_boxes
from models.transforms import AXIS_CACHE_SIZE
from router.casefile import label_dtype
from router.strategies import OnSlice, ScoredBoxPredictor, Strategy, StrategyParams
from router.strategies.footprint import EmbeddingRoom, slice_bytes
from router.strategies.labels import paint_masks
from router.strategies.zoom import plan_windows, small_boxes

BOX_BATCH = 64
WHOLE_IMAGE = "image"  # the embedding cache's key of the whole image: its masks may be decoded twice


@dataclass(frozen=True, kw_only=True)
class Image2dParams(StrategyParams):
    """image2d's parameters ([<section>.image2d]); the defaults are what router/routes.toml ships.

    Every box is first decoded on the whole image. zoom_below: a box whose longer side is under this
    fraction of the image's longer side, and whose mask's stability score (SAM's: how little the mask
    moves with its threshold) is under `zoom_stability`, is decoded again in a crop of about 1.5 x
    tile_scale x its side, at least min_window px, in at most max_windows crops (tiles grow to keep to
    it; router.strategies.zoom). zoom_below 0: never; zoom_stability above 1: every small box.
    clip_to_box: a box's mask keeps only the pixels inside the box (the prompt says the object is there).
    """

    zoom_below: float = 0.1
    tile_scale: float = 3.0
    min_window: int = 128
    max_windows: int = 20
    zoom_stability: float = 0.6
    clip_to_box: bool = True

    def __post_init__(self) -> None:
        """Raise ValueError unless 0 <= zoom_below <= 1, tile_scale >= 1, min_window >= 16, max_windows >= 1,
        zoom_stability >= 0 and clip_to_box is a bool."""
        if not 0.0 <= self.zoom_below <= 1.0 or self.tile_scale < 1.0 or self.min_window < 16 or self.max_windows < 1:
            raise ValueError(f"need 0 <= zoom_below <= 1, tile_scale >= 1, min_window >= 16 and max_windows >= 1, "
                             f"got {self.zoom_below}, {self.tile_scale}, {self.min_window} and {self.max_windows}")
        if not self.zoom_stability >= 0.0:
            raise ValueError(f"zoom_stability must be >= 0, got {self.zoom_stability}")
        if not isinstance(self.clip_to_box, bool):
            raise ValueError(f"clip_to_box must be true or false, got {self.clip_to_box}")


def segment_image2d(
    image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: Image2dParams = Image2dParams()
) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 4) boxes -> (H, W) label map (label i for boxes[i-1]); `params` say where
    the masks are decoded again in zoomed crops and whether they are clipped to their boxes (Image2dParams)."""
    segs = np.zeros(image.shape[:2], label_dtype(len(boxes)))
    if len(boxes) == 0:
        return segs
    clip_to_box = params.clip_to_box
    small = small_boxes(boxes, image.shape[:2], params.zoom_below)
    zoomed = np.zeros(len(boxes), bool)
    predictor.set_image(image, key=WHOLE_IMAGE)
    for start in range(0, len(boxes), BOX_BATCH):  # batches bound memory: an image may carry hundreds of boxes
        chunk = np.arange(start, min(start + BOX_BATCH, len(boxes)))
        masks, stability = predictor.predict_scored(boxes[chunk])
        zoomed[chunk] = small[chunk] & (stability < params.zoom_stability)
        keep = ~zoomed[chunk]
        _paint(segs, masks[keep], boxes[chunk][keep], chunk[keep], clip_to_box)
    doubtful_indices = np.flatnonzero(zoomed)
    if doubtful_indices.size == 0:
        return segs
    plan = plan_windows(boxes[doubtful_indices], image.shape[:2], params.zoom_below, params.tile_scale,
                        params.min_window, params.max_windows)
    for window, members in plan:
        indices = doubtful_indices[members]
        if window is None:  # too big to zoom: their whole-image masks after all
            _paint_rest(segs, image, boxes, indices, predictor, clip_to_box)
            continue
        y0, x0, y1, x1 = window
        predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
        _decode_and_paint(segs[y0:y1, x0:x1], boxes - np.array([x0, y0, x0, y0]), indices, predictor, clip_to_box)
    return segs


def _paint(target: np.ndarray, masks: np.ndarray, boxes: np.ndarray, indices: np.ndarray, clip: bool) -> None:
    paint_masks(target, clip_to_boxes(masks, boxes) if clip else masks, indices + 1)


def _decode_and_paint(target: np.ndarray, boxes: np.ndarray, indices: np.ndarray, predictor: ScoredBoxPredictor,
                      clip: bool) -> None:
    """Decode `boxes[indices]` (in `target`'s pixels) on the current image and paint them into `target`."""
    for start in range(0, len(indices), BOX_BATCH):
        chunk = indices[start : start + BOX_BATCH]
        _paint(target, predictor.predict(boxes[chunk]), boxes[chunk], chunk, clip)


def _paint_rest(segs: np.ndarray, image: np.ndarray, boxes: np.ndarray, indices: np.ndarray,
                predictor: ScoredBoxPredictor, clip: bool) -> None:
    """Paint the whole-image masks of `indices`, decoded again from the cached embedding."""
    predictor.set_image(image, key=WHOLE_IMAGE)
    _decode_and_paint(segs, boxes, indices, predictor, clip)


def _run(
    image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: Image2dParams,
    on_slice: OnSlice | None = None,
) -> np.ndarray:
    return segment_image2d(image, boxes, predictor, params)


def working_bytes(shape: tuple[int, ...], boxes: np.ndarray, params: Image2dParams, embeddings: EmbeddingRoom) -> int:
    """On an (H, W) image: label map, masks of one batch of boxes, a zoom crop, resize matrices."""
    height, width = shape
    pixels = height * width
    label_bytes = np.dtype(label_dtype(len(boxes))).itemsize
    resize_matrices = AXIS_CACHE_SIZE * (height + width) * 256 * 4  # models.transforms.bilinear_axis' cache
    return label_bytes * pixels + slice_bytes(pixels, min(len(boxes), BOX_BATCH)) + 3 * pixels + resize_matrices


def boxes_per_call(shape: tuple[int, ...], boxes: np.ndarray, params: Image2dParams) -> int:
    """Boxes are decoded BOX_BATCH at a time."""
    return min(len(boxes), BOX_BATCH)


STRATEGY = Strategy("image2d", dim=2, run=_run, params=Image2dParams, working_bytes=working_bytes,
                    boxes_per_call=boxes_per_call)
