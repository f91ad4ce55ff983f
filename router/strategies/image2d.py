"""2D strategy: one encoder pass per image, all boxes decoded (handed to the predictor BOX_BATCH at a time, which
decodes them its own decoder batch at a time); small boxes whose masks are doubtful decoded again in zoomed
crops (router.strategies.zoom), a few encoder passes more.

Image2dParams' defaults are what router/routes.toml ships; measured: docs/results.md, "Zoom only where in doubt".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.transforms import AXIS_CACHE_SIZE
from router.strategies import OnSlice, ScoredBoxPredictor, Strategy
from router.strategies.footprint import EmbeddingRoom, slice_bytes
from router.strategies.labels import BoxMasks, MaskParams, box_masks_bytes, label_dtype
from router.strategies.zoom import plan_windows, small_boxes

# Boxes per predict() call: bounds the masks held at once (an image may carry hundreds of boxes). The decoder
# itself runs the predictor's batch (models.predictor.DEFAULT_DECODE_BATCH, or the memory guard's smaller one).
BOX_BATCH = 64
WHOLE_IMAGE = "image"  # the embedding cache's key of the whole image: its masks may be decoded twice


@dataclass(frozen=True, kw_only=True)
class Image2dParams(MaskParams):
    """image2d's parameters ([<section>.image2d]); the defaults are what router/routes.toml ships.

    Every box is first decoded on the whole image. zoom_below: a box whose longer side is under this
    fraction of the image's longer side, and whose mask's stability score (SAM's: how little the mask
    moves with its threshold) is under `zoom_stability`, is decoded again in a crop of about 1.5 x
    tile_scale x its side, at least min_window px, in at most max_windows crops (tiles grow to keep to
    it; router.strategies.zoom). zoom_below 0: never; zoom_stability above 1: every small box.
    clip_to_box, overlap, overlap_*: how masks go into the label map (MaskParams).
    """

    zoom_below: float = 0.1
    tile_scale: float = 3.0
    min_window: int = 128
    max_windows: int = 20
    zoom_stability: float = 0.6

    def __post_init__(self) -> None:
        """Raise ValueError unless 0 <= zoom_below <= 1, tile_scale >= 1, min_window >= 16, max_windows >= 1,
        zoom_stability >= 0 and the mask fields are valid (MaskParams)."""
        super().__post_init__()
        if not 0.0 <= self.zoom_below <= 1.0 or self.tile_scale < 1.0 or self.min_window < 16 or self.max_windows < 1:
            raise ValueError(f"need 0 <= zoom_below <= 1, tile_scale >= 1, min_window >= 16 and max_windows >= 1, "
                             f"got {self.zoom_below}, {self.tile_scale}, {self.min_window} and {self.max_windows}")
        if not self.zoom_stability >= 0.0:
            raise ValueError(f"zoom_stability must be >= 0, got {self.zoom_stability}")


def box_regions(shape: tuple[int, ...], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) [x0, y0, x1, y1] boxes on an (H, W) image -> their (N, 2) inclusive (y, x) lows and highs,
    corners rounded outwards to whole pixels and clipped to the image (as models.boxes.clip_to_boxes)."""
    height, width = shape
    lows = np.stack([np.floor(boxes[:, 1]), np.floor(boxes[:, 0])], axis=1).astype(np.int64)
    highs = np.stack([np.ceil(boxes[:, 3]), np.ceil(boxes[:, 2])], axis=1).astype(np.int64)
    lows = np.clip(lows, 0, [height - 1, width - 1])
    return lows, np.clip(np.maximum(highs, lows), 0, [height - 1, width - 1])


def segment_image2d(
    image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: Image2dParams = Image2dParams()
) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 4) boxes -> (H, W) label map (label i for boxes[i-1]); `params` say where
    the masks are decoded again in zoomed crops and how they go into the label map (Image2dParams)."""
    dtype = label_dtype(len(boxes))
    if len(boxes) == 0:
        return np.zeros(image.shape[:2], dtype)
    masks_of = BoxMasks(image.shape[:2], *box_regions(image.shape[:2], boxes), params.clip_to_box)
    small = small_boxes(boxes, image.shape[:2], params.zoom_below)
    zoomed = np.zeros(len(boxes), bool)
    predictor.set_image(image, key=WHOLE_IMAGE)
    for start in range(0, len(boxes), BOX_BATCH):
        chunk = np.arange(start, min(start + BOX_BATCH, len(boxes)))
        masks, stability = predictor.predict_scored(boxes[chunk])
        zoomed[chunk] = small[chunk] & (stability < params.zoom_stability)
        for index, mask in zip(chunk[~zoomed[chunk]], masks[~zoomed[chunk]], strict=True):
            masks_of.put(int(index), mask)
    doubtful_indices = np.flatnonzero(zoomed)
    if doubtful_indices.size:
        plan = plan_windows(boxes[doubtful_indices], image.shape[:2], params.zoom_below, params.tile_scale,
                            params.min_window, params.max_windows)
        for window, members in plan:
            indices = doubtful_indices[members]
            if window is None:  # too big to zoom: their whole-image masks after all
                predictor.set_image(image, key=WHOLE_IMAGE)
                _decode_into(masks_of, boxes, indices, predictor, (0, 0))
                continue
            y0, x0, y1, x1 = window
            predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
            _decode_into(masks_of, boxes - np.array([x0, y0, x0, y0]), indices, predictor, (y0, x0))
    return params.resolve(masks_of, dtype)


def _decode_into(masks_of: BoxMasks, boxes: np.ndarray, indices: np.ndarray, predictor: ScoredBoxPredictor,
                 origin: tuple[int, int]) -> None:
    """Decode `boxes[indices]` (in the current image's pixels, whose corner is `origin` in the case's image)
    and keep each mask."""
    for start in range(0, len(indices), BOX_BATCH):
        chunk = indices[start : start + BOX_BATCH]
        for index, mask in zip(chunk, predictor.predict(boxes[chunk]), strict=True):
            masks_of.put(int(index), mask, origin)


class Image2d(Strategy[Image2dParams]):
    """One encoder pass per image, small doubtful boxes zoomed (segment_image2d)."""

    name = "image2d"
    dim = 2
    params = Image2dParams

    def run(self, image: np.ndarray, boxes: np.ndarray, predictor: ScoredBoxPredictor, params: Image2dParams,
            on_slice: OnSlice | None = None) -> np.ndarray:
        return segment_image2d(image, boxes, predictor, params)

    def working_bytes(self, shape: tuple[int, ...], boxes: np.ndarray, params: Image2dParams,
                      embeddings: EmbeddingRoom) -> int:
        """On an (H, W) image: label map, masks of one batch of boxes, each box's kept mask (BoxMasks), a zoom
        crop, resize matrices."""
        height, width = shape
        pixels = height * width
        label_bytes = np.dtype(label_dtype(len(boxes))).itemsize
        # models.transforms.bilinear_axis' cache: float32 matrices from the model's mask frame to the image's sides
        resize_matrices = AXIS_CACHE_SIZE * (height + width) * embeddings.mask_frame * 4
        kept = box_masks_bytes(shape, *box_regions(shape, boxes), params.clip_to_box, label_bytes)
        return (label_bytes * pixels + slice_bytes(pixels, min(len(boxes), BOX_BATCH)) + 3 * pixels
                + resize_matrices + kept)

    def boxes_per_call(self, shape: tuple[int, ...], boxes: np.ndarray, params: Image2dParams) -> int:
        """Boxes are handed to predict() BOX_BATCH at a time (router/memory.py takes the smaller of this and the
        predictor's decoder batch)."""
        return min(len(boxes), BOX_BATCH)
