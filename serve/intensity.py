"""A viewer's raw volume (CT in HU, MR, PET as floats or ints) -> the uint8 volume the models take.

The rule is seg-predict's for non-uint8 images (router.validation.to_uint8), so a volume segmented in a
viewer and the same volume in a case file see the same pixels: uint8 as is, bool x 255, floats within
[0, 1] x 255, values within 0..255 rounded, anything else clipped to its 0.5 / 99.5 percentiles and
scaled to 0..255. No per-modality CT window: the percentiles adapt to the scan, and a fixed window
would differ from what the batch path (and the accuracy figures in docs/results.md) used.

to_uint8 holds float64 copies of the whole volume (33 bytes per voxel at its peak: 1.3 GB for a
512 x 512 x 150 CT); here the percentiles are taken once (on a float64 copy for floats only, whose
percentiles to_uint8 also takes in float64; integers are exact in float64 already) and the scaling runs
slab by slab, with the same arithmetic, so the result is identical (tests/test_serve_units.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from router.validation import CaseError

SLAB_VOXELS = 1 << 22  # voxels scaled at a time: float64 temporaries of 32 MiB


def peak_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """An upper bound of what volume_to_uint8 allocates besides its input: the uint8 result, the
    percentile's copy (float64 for floats, the dtype's size for integers) and the slab temporaries."""
    voxels = int(np.prod(shape, dtype=object))
    copy = 8 if dtype.kind == "f" else dtype.itemsize
    return voxels * (1 + copy) + 4 * 8 * SLAB_VOXELS


def volume_to_uint8(volume: np.ndarray) -> np.ndarray:
    """(D, H, W) volume of any real dtype -> (D, H, W) uint8 by router.validation.to_uint8's rule.
    Raises router.validation.CaseError for NaN or Inf, or another dtype."""
    if volume.dtype == np.uint8:
        return np.ascontiguousarray(volume)
    if volume.dtype == np.bool_:
        return volume.astype(np.uint8) * 255
    if volume.dtype.kind not in "iuf":
        raise CaseError(f"image dtype {volume.dtype} is not a number type")
    if volume.dtype.kind == "f" and not np.all(np.isfinite(volume)):
        raise CaseError("image contains NaN or Inf values")
    lo, hi = float(volume.min()), float(volume.max())
    if volume.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return _by_slab(volume, lambda values: np.rint(values * 255.0))
    if lo >= 0.0 and hi <= 255.0:
        return _by_slab(volume, np.rint)
    source = volume.astype(np.float64) if volume.dtype.kind == "f" else volume
    low, high = (float(value) for value in np.percentile(source, [0.5, 99.5]))
    del source
    if high <= low:
        return np.zeros(volume.shape, np.uint8)
    return _by_slab(volume, lambda values: np.rint((np.clip(values, low, high) - low) / (high - low) * 255.0))


def _by_slab(volume: np.ndarray, scale: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`scale` (float64 array -> float64 array in 0..255) applied a few slices at a time, into uint8."""
    out = np.empty(volume.shape, np.uint8)
    per_slice = max(1, int(np.prod(volume.shape[1:])))
    step = max(1, SLAB_VOXELS // per_slice)
    for start in range(0, volume.shape[0], step):
        values = volume[start : start + step].astype(np.float64)
        out[start : start + step] = scale(values).astype(np.uint8)
    return out
