"""Boxes for a converted case: from a label map or a boxes file; cropping around them (numpy, scipy).

Boxes are the challenge's: `[x0, y0, x1, y1]` (2D) or `[x0, y0, z0, x1, y1, z1]` (3D), voxel indices,
inclusive, x first, while arrays are (y, x) or (z, y, x).

A boxes file is JSON, either a bare list of voxel boxes or
    {"coordinates": "voxel" | "world" | "ras", "boxes": [[...], ...]}
  * "voxel": boxes as above, in the source image's voxel indices (before any crop).
  * "world": two opposite corners `[x0, y0, z0, x1, y1, z1]` (or `[x0, y0, x1, y1]` for a 2D image) in
    physical millimetres, ITK/DICOM LPS (what SimpleITK's TransformIndexToPhysicalPoint gives).
  * "ras": the same in RAS, the coordinates 3D Slicer shows (x and y negated).
  Each world corner goes to the nearest voxel; the box spans the two voxels (any rotation of the image
  is allowed, the corners are sorted per axis after the conversion).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convert.io import ConvertError, Geometry
from models.boxes import boxes_from_labels
from router.validation import BoxOutsideError, CaseError, clip_boxes


def integer_labels(labels: np.ndarray) -> np.ndarray:
    """A read label map -> int64 of the same shape; raise ConvertError for fractions, negatives, vectors."""
    if labels.dtype.kind not in "biuf":
        raise ConvertError(f"the label map has unsupported pixel type {labels.dtype}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.rint(labels)):
            raise ConvertError("the label map holds non-integer values")
    if labels.min(initial=0) < 0:
        raise ConvertError(f"the label map holds negative labels (min {labels.min()})")
    return labels.astype(np.int64)


def relabel(labels: np.ndarray, split_components: bool = False, min_voxels: int = 0) -> tuple[np.ndarray, list[int]]:
    """(H, W) or (D, H, W) integer label map -> (case labels 1..N, original value of each case label).

    Case label i is the i-th label value present, in increasing order; with `split_components`, each
    connected component of each value (26-connected in 3D, 8 in 2D) becomes its own label, ordered by
    value, then by the component's first voxel in (z, y, x) scan order. Objects (labels, or components)
    of fewer than `min_voxels` voxels are dropped (set to 0). Raise ConvertError if nothing is left.
    """
    from scipy import ndimage

    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise ConvertError("the label map is empty (all voxels are 0)")
    out = np.zeros(labels.shape, np.int64)
    origin: list[int] = []
    structure = np.ones((3,) * labels.ndim, bool)
    for value in values:
        mask = labels == value
        if split_components:
            components, count = ndimage.label(mask, structure=structure)
            for component in range(1, count + 1):
                piece = components == component
                if piece.sum() >= min_voxels:
                    origin.append(value)
                    out[piece] = len(origin)
        elif mask.sum() >= min_voxels:
            origin.append(value)
            out[mask] = len(origin)
    if not origin:
        raise ConvertError(f"every object of the label map has fewer than {min_voxels} voxels")
    if len(origin) > np.iinfo(np.uint16).max:
        raise ConvertError(f"{len(origin)} objects exceed the 65535 labels a case can hold")
    return out.astype(np.uint8 if len(origin) <= 255 else np.uint16), origin


def label_boxes(case_labels: np.ndarray) -> np.ndarray:
    """Case labels 1..N -> (N, 4) or (N, 6) int64 tight inclusive boxes (models.boxes)."""
    return boxes_from_labels(case_labels)


def read_boxes(path: Path, geometry: Geometry, dim: int) -> np.ndarray:
    """A boxes JSON file -> (N, 2 * dim) int64 voxel boxes in the source image's indices, not yet checked
    against the image (see `check_boxes`). `geometry` converts world boxes; `dim` is the case's (a
    single-slice volume gives a 2D case: its world boxes have 3D corners, its voxel boxes 2D ones)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvertError(f"cannot read boxes file {path}: {error}") from error
    if isinstance(data, list):
        data = {"coordinates": "voxel", "boxes": data}
    if not isinstance(data, dict) or "boxes" not in data:
        raise ConvertError(f"{path}: expected a list of boxes or {{\"coordinates\": ..., \"boxes\": [...]}}")
    kind = data.get("coordinates", "voxel")
    if kind not in ("voxel", "world", "ras"):
        raise ConvertError(f"{path}: coordinates must be voxel, world or ras, got {kind!r}")
    width = 2 * (dim if kind == "voxel" else geometry.dimension)
    try:
        boxes = np.asarray(data["boxes"], np.float64).reshape(-1, width) if data["boxes"] else np.zeros((0, width))
    except (TypeError, ValueError) as error:
        raise ConvertError(f"{path}: {kind} boxes must be lists of {width} numbers ({error})") from error
    if not np.all(np.isfinite(boxes)):
        raise ConvertError(f"{path}: boxes hold NaN or Inf")
    if kind == "voxel":
        if np.any(boxes != np.rint(boxes)):
            raise ConvertError(f"{path}: voxel boxes must be whole numbers")
        return boxes.astype(np.int64)
    d = geometry.dimension
    corners = boxes.reshape(-1, d)
    if kind == "ras":
        corners = corners * np.array([-1.0, -1.0, 1.0][:d])
    indices = np.rint(geometry.to_index(corners)).reshape(-1, 2, d)
    low, high = indices.min(axis=1), indices.max(axis=1)
    if dim < d:  # a single-slice volume as a 2D case: the z index must be that slice
        low, high = low[:, :dim], high[:, :dim]
    return np.concatenate([low, high], axis=1).astype(np.int64)


def check_boxes(boxes: np.ndarray, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Voxel boxes against an image of `spatial_shape` ((H, W) or (D, H, W)), by predict.py's own check
    (router.validation.clip_boxes): a degenerate box or one wholly outside raises ConvertError; one
    partly outside is clipped."""
    try:
        return clip_boxes(boxes, spatial_shape)
    except BoxOutsideError as error:  # seg-convert's boxes are x first: the image's size is said that way
        raise ConvertError(f"box {error.index} {error.box} lies outside the image (x, y[, z] size "
                           f"{error.size})") from error
    except CaseError as error:
        raise ConvertError(str(error)) from error


def crop_region(boxes: np.ndarray, spatial_shape: tuple[int, ...], margin: int,
                slices_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """The region around all boxes, grown by `margin` voxels and clipped to the image.

    Returns (offset, size), both (x, y[, z]): the region's first voxel and extent. `slices_only` crops
    only z (a volume cut to the labelled slices, as the challenge's cases are); x and y stay whole.
    """
    dim = len(spatial_shape)
    full = np.array(spatial_shape[::-1])
    if len(boxes) == 0:
        raise ConvertError("nothing to crop around: no boxes")
    low = np.maximum(boxes[:, :dim].min(axis=0) - margin, 0)
    high = np.minimum(boxes[:, dim:].max(axis=0) + margin, full - 1)
    if slices_only:
        keep = np.arange(dim) < dim - 1  # x, y whole
        low, high = np.where(keep, 0, low), np.where(keep, full - 1, high)
    return low.astype(np.int64), (high - low + 1).astype(np.int64)
