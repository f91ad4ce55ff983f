"""Pure pre/post-processing functions shared by every model (numpy only, no state)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.registry import ModelSpec
from models.resample import resize_area

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)
AXIS_CACHE_SIZE = 16  # bilinear_axis keeps this many axis matrices (images repeat shapes)


def longest_side_shape(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) after scaling so that the longest side is `target`, rounded half up as SAM does."""
    scale = target / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(image: np.ndarray, target: int) -> np.ndarray:
    """(H, W[, C]) uint8 -> (h, w[, C]) with max(h, w) == target, area interpolation (the challenge's
    cv2.INTER_AREA, bit for bit: models/resample.py).

    EfficientViT-SAM's reference resizes with PIL's antialiased bilinear; area interpolation is the
    OpenCV filter closest to it when shrinking (the runtime has no PIL).
    """
    height, width = image.shape[:2]
    new_h, new_w = longest_side_shape(height, width, target)
    return resize_area(image, new_h, new_w)


def normalise(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(h, w, 3) uint8 -> (h, w, 3) float32: min-max to [0, 1] (LiteMedSAM) or ImageNet mean/std."""
    pixels = image.astype(np.float32)
    if spec.normalisation == "minmax":
        low, high = float(pixels.min()), float(pixels.max())
        return (pixels - low) / max(high - low, 1e-8)
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD


def pad_to_square(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, C) -> (size, size, C), zeros added at the bottom and right."""
    height, width = image.shape[:2]
    return np.pad(image, ((0, size - height), (0, size - width), (0, 0)))


def preprocess(image: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) or grey (H, W) uint8 -> encoder input (1, 3, S, S) float32 and unpadded (h, w) at S.

    A grey slice is resized once and then repeated to 3 channels: the same numbers as repeating first.
    """
    resized = resize_longest_side(image, spec.image_size)
    if resized.ndim == 2:
        resized = np.repeat(resized[:, :, None], 3, axis=2)
    padded = pad_to_square(normalise(resized, spec), spec.image_size)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None]), resized.shape[:2]


def scale_boxes(boxes: np.ndarray, original_hw: tuple[int, int], spec: ModelSpec) -> np.ndarray:
    """(N, 4) boxes in original pixels -> (N, 4) float32 in the model's square prompt frame.

    LiteMedSAM's baseline scales by frame / max(H, W) and truncates; SAM-style predictors
    (EfficientViT-SAM) scale x and y separately to the rounded longest-side shape, unrounded.
    """
    boxes = boxes.astype(np.float64)
    if spec.floor_boxes:
        return np.floor(boxes * (spec.prompt_frame / max(original_hw))).astype(np.float32)
    frame_h, frame_w = longest_side_shape(*original_hw, spec.prompt_frame)
    scale = np.array([frame_w / original_hw[1], frame_h / original_hw[0]] * 2)
    return (boxes * scale).astype(np.float32)


def _resize_stack(stack: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, h, w) float32 -> (N, height, width) float32, bilinear (half-pixel centres, like torch's and
    cv2.INTER_LINEAR's; equal to cv2's to float32 rounding, tests/test_resample.py)."""
    rows, cols = bilinear_axis(stack.shape[1], height), bilinear_axis(stack.shape[2], width)
    return np.stack([rows.weights @ plane @ cols.weights.T for plane in stack]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class BilinearAxis:
    """Bilinear resampling of one axis from `size_in` to `size_out` samples as a matrix.

    Half-pixel centres without antialiasing, as torch's F.interpolate(align_corners=False) and
    cv2.INTER_LINEAR: output i reads inputs first[i] and last[i] (= first[i] or first[i] + 1).
    weights: (size_out, size_in) float32 with those two entries per row, summing to 1.
    """

    weights: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def support(self, low: int, high: int) -> tuple[int, int]:
        """[start, stop) of the outputs that read any input in [low, high] (both monotonic in i)."""
        return int(np.searchsorted(self.last, low, "left")), int(np.searchsorted(self.first, high, "right"))


@lru_cache(maxsize=AXIS_CACHE_SIZE)
def bilinear_axis(size_in: int, size_out: int) -> BilinearAxis:
    """The resampling of one axis from `size_in` to `size_out` samples (cached: images repeat shapes)."""
    source = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    first = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    last = np.minimum(first + 1, size_in - 1)
    upper = (source - first).astype(np.float32)
    weights = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, first), 1 - upper)
    np.add.at(weights, (rows, last), upper)
    return BilinearAxis(weights, first, last)


def upsample_positive(logits: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) float32 logits -> (N, height, width) bool: bilinear upsampling, then > 0.

    out: an all-False (N, height, width) bool array to fill (and return) instead of a new one.

    A bilinear sample is a convex combination of its neighbours, so it can only be positive where
    one of them is: each mask is computed only over the output rectangle that reads its positive
    low-resolution rows and columns. For a many-box image that is a small fraction of the frame, and
    no (N, height, width) float array is ever made: on a 2048x2048 image with 300 boxes this took
    the postprocessing from 8 s (full-frame cv2.resize of every mask) to 0.3 s.
    """
    rows, cols = bilinear_axis(logits.shape[1], height), bilinear_axis(logits.shape[2], width)
    out = np.zeros((logits.shape[0], height, width), bool) if out is None else out
    for index, low in enumerate(logits):
        positive = low > 0
        if not positive.any():
            continue
        hit_rows, hit_cols = np.flatnonzero(positive.any(1)), np.flatnonzero(positive.any(0))
        y0, y1 = rows.support(hit_rows[0], hit_rows[-1])
        x0, x1 = cols.support(hit_cols[0], hit_cols[-1])
        if y1 <= y0 or x1 <= x0:  # when shrinking, no output may read those inputs
            continue
        # Only the low-resolution rows/columns those outputs read take part in the products.
        r0, r1 = rows.first[y0], rows.last[y1 - 1] + 1
        c0, c1 = cols.first[x0], cols.last[x1 - 1] + 1
        region = rows.weights[y0:y1, r0:r1] @ low[r0:r1, c0:c1] @ cols.weights[x0:x1, c0:c1].T
        out[index, y0:y1, x0:x1] = region > 0
    return out


def postprocess_masks(
    logits: np.ndarray, original_hw: tuple[int, int], spec: ModelSpec, out: np.ndarray | None = None
) -> np.ndarray:
    """(N, 1, m, m) decoder logits -> (N, H, W) bool masks at the original image size (into `out`, all
    False, when given).

    The logits go up to the prompt frame when it is larger (EfficientViT-SAM), are cropped to the
    unpadded image area in that frame, resized bilinearly to (H, W) and thresholded at 0 (p > 0.5).
    """
    masks = logits[:, 0].astype(np.float32, copy=False)
    if masks.shape[-1] != spec.prompt_frame:
        masks = _resize_stack(masks, spec.prompt_frame, spec.prompt_frame)
    crop_h, crop_w = longest_side_shape(*original_hw, spec.prompt_frame)
    return upsample_positive(masks[:, :crop_h, :crop_w], *original_hw, out=out)


def stability_scores(logits: np.ndarray, offset: float = 1.0) -> np.ndarray:
    """(N, h, w) float logits -> (N,) float64 SAM's stability score: the area where the logit exceeds
    +offset over the area where it exceeds -offset (1.0: the mask does not move when its threshold does);
    0.0 for a mask that is empty even at -offset."""
    strong = (logits > offset).sum(axis=(1, 2))
    weak = (logits > -offset).sum(axis=(1, 2))
    return np.where(weak > 0, strong / np.maximum(weak, 1), 0.0)
