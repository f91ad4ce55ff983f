"""A case's arrays as loaded -> the arrays the pipeline runs on, or a one-line reason why not. No file I/O.

`validate_case` is the one check of a case's content: router.casefile.CaseFile.read runs it on what it
loaded, seg-convert (convert/boxes.py) runs `clip_boxes` on the boxes it makes, and the memory guard
(router/memory.py) estimates from the boxes `clip_boxes` accepts. Axis order and box layout are
router/casefile.py's (its module docstring).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np


class CaseError(ValueError):
    """A case file that cannot be segmented; the message names the problem in one line."""


class BoxOutsideError(CaseError):
    """A box wholly outside the image: `index`, the `box` as given, the image's (x, y[, z]) `size`."""

    def __init__(self, message: str, index: int, box: list[int], size: list[int]) -> None:
        super().__init__(message)
        self.index, self.box, self.size = index, box, size


class CaseArrays(NamedTuple):
    """A validated case's arrays.

    image: uint8, (H, W, 3) for 2D or (D, H, W) for 3D, C-contiguous.
    boxes: int64, (N, 4) for 2D or (N, 6) for 3D, clipped to the image, inclusive corners.

    A 3D case's `spacing` is checked (validate_spacing) but not kept: no strategy uses it, so the label map
    never depends on it.
    """

    image: np.ndarray
    boxes: np.ndarray


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Bring an image of any real dtype to uint8 0..255, as the challenge's preprocessing does.

    Values already in 0..255 are rounded, except floats within [0, 1], which are taken as intensities
    in [0, 1] and multiplied by 255 (rounding them would leave a black-and-white image); other ranges
    are clipped to the 0.5/99.5 percentiles and min-max scaled to 0..255. Shape is kept.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    values = image.astype(np.float64, copy=False)
    lo, hi = float(values.min()), float(values.max())
    if image.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(values).astype(np.uint8)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    scaled = (np.clip(values, lo, hi) - lo) / (hi - lo) * 255.0
    return np.rint(scaled).astype(np.uint8)


def validate_image(image: np.ndarray, dim: int) -> np.ndarray:
    """`imgs` as stored -> uint8 (H, W, 3) for 2D (grey and 1- or 4-channel images accepted) or (D, H, W)
    for 3D; raise CaseError on another dtype, NaN/Inf, another shape or an empty image."""
    if image.dtype.kind not in "biuf":
        raise CaseError(f"'imgs' has unsupported dtype {image.dtype}")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise CaseError("'imgs' contains NaN or Inf values")
    if dim == 2:
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise CaseError(f"2D 'imgs' must be (H, W) or (H, W, 3), got shape {image.shape}")
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        image = image[:, :, :3]
    elif image.ndim != 3:
        raise CaseError(f"3D 'imgs' must be (D, H, W), got shape {image.shape}")
    if min(image.shape[: 2 if dim == 2 else 3]) < 1:
        raise CaseError(f"'imgs' is empty, shape {image.shape}")
    return to_uint8(image)


def clip_boxes(boxes: np.ndarray, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """`boxes` as stored (any real dtype; (N, 2d) or one box as (2d,)) against an image of `spatial_shape`
    ((H, W) or (D, H, W), d its length) -> (N, 2d) int64 rounded and clipped to the image.

    Raises CaseError on another dtype or shape, NaN/Inf, more than 65535 boxes (a uint16 label map's
    labels) or a degenerate box, and BoxOutsideError on a box wholly outside the image.
    """
    dim = len(spatial_shape)
    width = 2 * dim
    if boxes.dtype.kind not in "biuf":
        raise CaseError(f"'boxes' has unsupported dtype {boxes.dtype}")
    if boxes.size == 0:
        boxes = np.zeros((0, width), np.int64)
    if boxes.ndim == 1 and boxes.size == width:
        boxes = boxes[None, :]
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise CaseError(f"{dim}D 'boxes' must be (N, {width}), got shape {boxes.shape}")
    if boxes.dtype.kind == "f":
        if not np.all(np.isfinite(boxes)):
            raise CaseError("'boxes' contains NaN or Inf values")
        boxes = np.rint(boxes)
    if len(boxes) > np.iinfo(np.uint16).max:
        raise CaseError(f"{len(boxes)} boxes exceed the 65535 labels a uint16 label map can hold")
    # Far-out coordinates (1e30, uint64 above 2**63) would wrap in the int64 cast; clipping them to
    # +-2**31 first keeps "partly outside -> clipped, wholly outside -> error" true for them too.
    boxes = np.clip(boxes.astype(np.float64), -(2.0**31), 2.0**31).astype(np.int64)
    upper = np.array(spatial_shape[::-1]) - 1  # (x, y[, z])
    lows, highs = boxes[:, :dim], boxes[:, dim:]
    degenerate = np.any(lows > highs, axis=1)
    outside = np.any(highs < 0, axis=1) | np.any(lows > upper, axis=1)
    if np.any(degenerate | outside):  # the first bad box is named, a degenerate one before an outside one
        index = int(np.argmax(degenerate | outside))
        box = boxes[index].tolist()
        if degenerate[index]:
            raise CaseError(f"box {index} is degenerate (a min corner exceeds its max corner): {box}")
        raise BoxOutsideError(f"box {index} lies entirely outside the image of shape {spatial_shape}: {box}",
                              index, box, (upper + 1).tolist())
    return np.concatenate([np.clip(lows, 0, upper), np.clip(highs, 0, upper)], axis=1).astype(np.int64)


def validate_spacing(spacing: np.ndarray | None) -> np.ndarray:
    """A 3D case's `spacing` as stored (None: absent, taken as 1 mm) -> (3,) float64 (x, y, z); raise
    CaseError unless it is 3 positive finite numbers."""
    if spacing is None:
        spacing = np.ones(3)
    spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise CaseError(f"'spacing' must be 3 positive numbers, got {spacing.tolist()}")
    return spacing


def validate_case(arrays: Mapping[str, np.ndarray], dim: int) -> CaseArrays:
    """A case's arrays as loaded ("imgs" and "boxes", for 3D "spacing" if stored) -> CaseArrays, checked
    and coerced in this order: image, boxes (against the image), spacing (checked, not kept: a case file
    with a bad one is refused; no strategy uses it). Raise CaseError (one line)."""
    image = validate_image(arrays["imgs"], dim)
    boxes = clip_boxes(arrays["boxes"], image.shape[:2] if dim == 2 else image.shape)
    if dim == 3:
        validate_spacing(arrays.get("spacing"))
    return CaseArrays(np.ascontiguousarray(image), boxes)
