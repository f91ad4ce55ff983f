"""Mask post-processing: footprint-limited bilinear upsampling equals a full-frame resize (painting the
label map: tests/test_labels.py). The full frame is resized by numpy (models.transforms._resize_stack, itself
checked against OpenCV in tests/test_resample.py) and, in the integration tier, by OpenCV."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from models.transforms import _resize_stack, bilinear_axis, upsample_positive

SIZES = [((256, 256), (512, 512)), ((256, 171), (1500, 1000)), ((200, 256), (333, 427)), ((128, 256), (100, 200)),
         ((64, 64), (64, 64))]


def _blur(noise: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) float32 -> the same, Gaussian-blurred over H and W (kernel to 4 sigma, borders mirrored
    without repeating the edge: cv2.GaussianBlur's BORDER_REFLECT_101)."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * noise.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(noise, pad, mode="reflect")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=axis)
        noise = windows @ taps
    return noise.astype(np.float32)


def _smooth_logits(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """(count, height, width) float32 blobs: mostly negative, a few positive regions, some all negative."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (height, width, count)).astype(np.float32)
    logits = _blur(noise, 5).transpose(2, 0, 1) * 20 - 0.8
    logits[0] = -1.0  # an empty mask
    return np.ascontiguousarray(logits)


def _full_frame(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every mask resized over the whole frame (numpy's bilinear, as cv2.INTER_LINEAR), then > 0."""
    return _resize_stack(logits, height, width) > 0


def _check_footprint(logits: np.ndarray, expected: np.ndarray) -> None:
    got = upsample_positive(logits, *expected.shape[1:])
    assert got.shape == expected.shape and got.dtype == bool
    assert expected.any() and not got[0].any()
    # float rounding may flip a pixel whose value is ~0; anything more is a wrong footprint
    assert (got != expected).sum() <= 2


@pytest.mark.parametrize(("low_hw", "out_hw"), SIZES)
def test_upsample_positive_equals_a_full_frame_resize(low_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    logits = _smooth_logits(6, *low_hw, seed=sum(out_hw))
    _check_footprint(logits, _full_frame(logits, *out_hw))


@pytest.mark.parametrize(("low_hw", "out_hw"), SIZES)
def test_upsample_positive_equals_opencvs_full_frame_resize(
    low_hw: tuple[int, int], out_hw: tuple[int, int], cv2: ModuleType
) -> None:
    logits = _smooth_logits(6, *low_hw, seed=sum(out_hw))
    height, width = out_hw
    resized = np.stack([cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR) for low in logits])
    _check_footprint(logits, resized > 0)


def test_upsample_positive_fills_a_given_array() -> None:
    logits = _smooth_logits(3, 64, 64, seed=1)
    out = np.zeros((5, 300, 300), bool)
    returned = upsample_positive(logits, 300, 300, out=out[1:4])
    assert np.shares_memory(returned, out)
    assert not out[0].any() and not out[4].any() and out[1:4].any()


def test_upsample_positive_when_shrinking_skips_unread_inputs() -> None:
    logits = np.full((2, 8, 8), -1.0, np.float32)
    logits[0, 3:5, 3:5] = 5.0  # 8 -> 2 reads inputs 1, 2 and 5, 6 only (source positions 1.5 and 5.5)
    logits[1, 2, 2] = 5.0
    got = upsample_positive(logits, 2, 2)
    assert np.array_equal(got, _full_frame(logits, 2, 2))
    assert not got[0].any() and got[1].any()


def test_bilinear_axis_rows_are_convex_combinations() -> None:
    axis = bilinear_axis(7, 19)
    assert np.allclose(axis.weights.sum(1), 1) and (axis.weights >= 0).all()
    assert ((axis.weights > 0).sum(1) <= 2).all()
    start, stop = axis.support(3, 3)
    readers = np.flatnonzero(axis.weights[:, 3] > 0)
    assert readers.min() >= start and readers.max() < stop
