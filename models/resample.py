"""OpenCV's INTER_AREA resize of uint8 images in numpy, bit for bit (the runtime image has no OpenCV).

`resize_area(image, height, width)` equals `cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)`
for uint8 (H, W) and (H, W, C) images: tests/test_resample.py checks it against opencv-python on random and
real images of many shapes. It follows the three paths of OpenCV 4's resize.cpp for that call:

* shrinking by whole factors on both axes ("area fast"): the mean of each block, rounded half up for 2x2
  blocks, else `float32(sum) * float32(1 / area)` rounded half to even;
* shrinking by any other factors (neither axis grows): each output sums its input pixels weighted by their
  covered area (`computeResizeAreaTab`), in float32 and in OpenCV's order (per row, then per column),
  rounded half to even;
* growing either axis: bilinear interpolation with INTER_AREA's coefficients in 11-bit fixed point, the
  vertical pass rounded as OpenCV's vector kernel does it (`VResizeLinearVec_32s8u`: each row sum shifted
  right by 4, multiplied keeping the high 16 bits, then (sum + 2) >> 2), on every column.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_DBL_EPSILON = float(np.finfo(np.float64).eps)
_COEF_BITS = 11  # INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> (height, width) or (height, width, C) uint8, as cv2.INTER_AREA."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise ValueError(f"resize_area takes a non-empty (H, W) or (H, W, C) uint8 image, got {image.dtype} "
                         f"{image.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"resize_area: output size must be positive, got {height}x{width}")
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    planes = image if image.ndim == 3 else image[:, :, None]
    inv_x, inv_y = width / src_w, height / src_h
    scale_x, scale_y = 1.0 / inv_x, 1.0 / inv_y
    if scale_x >= 1 and scale_y >= 1:
        int_x, int_y = int(np.rint(scale_x)), int(np.rint(scale_y))
        if abs(scale_x - int_x) < _DBL_EPSILON and abs(scale_y - int_y) < _DBL_EPSILON:
            out = _area_whole(planes, int_y, int_x)
        else:
            out = _area_weighted(planes, height, width, scale_y, scale_x)
    else:
        out = _area_bilinear(planes, height, width, scale_y, scale_x, inv_y, inv_x)
    return out if image.ndim == 3 else out[:, :, 0]


def _area_whole(planes: np.ndarray, block_h: int, block_w: int) -> np.ndarray:
    """(H, W, C) uint8 with H, W multiples of the block -> (H / block_h, W / block_w, C) block means."""
    if block_h == 2 and block_w == 2 and planes.shape[2] in (1, 3, 4):  # ResizeAreaFastVec: (sum + 2) >> 2
        wide = planes.astype(np.uint16)
        sums = wide[0::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 0::2] + wide[1::2, 1::2] + 2
        return (sums >> 2).astype(np.uint8)
    sums = np.zeros((planes.shape[0] // block_h, planes.shape[1] // block_w, planes.shape[2]), np.uint32)
    for row in range(block_h):  # strided views of the block's pixels: faster than a reduction over axes
        for col in range(block_w):
            sums += planes[row::block_h, col::block_w]
    means = sums.astype(np.float32) * (np.float32(1) / np.float32(block_h * block_w))
    return np.clip(np.rint(means), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def _area_table(size_in: int, size_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """computeResizeAreaTab as (size_out, taps) source indices and float32 weights, in OpenCV's order;
    unused taps have weight 0 (adding 0 * pixel leaves a float32 sum unchanged)."""
    rows: list[list[tuple[int, float]]] = []
    for out in range(size_out):
        start = out * scale
        stop = start + scale
        cell = min(scale, size_in - start)
        first, last = int(np.ceil(start)), int(np.floor(stop))
        last = min(last, size_in - 1)
        first = min(first, last)
        taps = []
        if first - start > 1e-3:
            taps.append((first - 1, float(np.float32((first - start) / cell))))
        taps.extend((index, float(np.float32(1.0 / cell))) for index in range(first, last))
        if stop - last > 1e-3:
            taps.append((last, float(np.float32(min(min(stop - last, 1.0), cell) / cell))))
        rows.append(taps)
    count = max(len(taps) for taps in rows)
    index = np.zeros((size_out, count), np.int64)
    weight = np.zeros((size_out, count), np.float32)
    for out, taps in enumerate(rows):
        for tap, (source, alpha) in enumerate(taps):
            index[out, tap], weight[out, tap] = source, alpha
    return index, weight


def _area_weighted(planes: np.ndarray, height: int, width: int, scale_y: float, scale_x: float) -> np.ndarray:
    """(H, W, C) uint8 -> (height, width, C) by covered-area weights (ResizeArea_Invoker, float32)."""
    src_h, src_w, channels = planes.shape
    x_index, x_weight = _area_table(src_w, width, scale_x)
    y_index, y_weight = _area_table(src_h, height, scale_y)
    # Horizontal pass, tap by tap in OpenCV's order; columns first in memory so that every tap gathers whole
    # contiguous columns, and in bands of source rows so that no float32 copy of a large image is made.
    rows = np.empty((src_h, width, channels), np.float32)  # OpenCV's buf, one per source row
    band = max(1, (1 << 22) // (src_w * channels))
    for top in range(0, src_h, band):
        columns = planes[top : top + band].transpose(1, 0, 2).astype(np.float32)  # (W, band, C)
        total = columns[x_index[:, 0]] * x_weight[:, 0, None, None]
        term = np.empty_like(total)
        for tap in range(1, x_index.shape[1]):
            np.multiply(columns[x_index[:, tap]], x_weight[:, tap, None, None], out=term)
            total += term
        rows[top : top + band] = total.transpose(1, 0, 2)
    sums = rows[y_index[:, 0]] * y_weight[:, 0, None, None]
    term = np.empty_like(sums)
    for tap in range(1, y_index.shape[1]):
        np.multiply(rows[y_index[:, tap]], y_weight[:, tap, None, None], out=term)
        sums += term
    return np.clip(np.rint(sums), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def _bilinear_table(size_in: int, size_out: int, scale: float, inv_scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """INTER_AREA's coefficients where an axis grows: (size_out,) first source index, (size_out, 2) int16-range
    fixed-point weights, and the first output from which only one source is read (xmax)."""
    first = np.zeros(size_out, np.int64)
    weights = np.zeros((size_out, 2), np.int64)
    one_tap = size_out
    for out in range(size_out):
        source = int(np.floor(out * scale))
        fraction = np.float32((out + 1) - (source + 1) * inv_scale)
        fraction = np.float32(0) if fraction <= 0 else np.float32(fraction - np.floor(fraction))
        if source + 1 >= size_in:
            one_tap = min(one_tap, out)
            if source >= size_in - 1:
                fraction, source = np.float32(0), size_in - 1
        first[out] = source
        weights[out] = (np.rint((np.float32(1) - fraction) * np.float32(_COEF_SCALE)),
                        np.rint(fraction * np.float32(_COEF_SCALE)))
    return first, weights, one_tap


def _area_bilinear(planes: np.ndarray, height: int, width: int, scale_y: float, scale_x: float,
                   inv_y: float, inv_x: float) -> np.ndarray:
    """(H, W, C) uint8 -> (height, width, C) where an axis grows: fixed-point bilinear (resizeGeneric_)."""
    src_h, src_w, channels = planes.shape
    x_first, x_weight, x_one_tap = _bilinear_table(src_w, width, scale_x, inv_x)
    y_first, y_weight, _ = _bilinear_table(src_h, height, scale_y, inv_y)
    pixels = planes.astype(np.int64)
    # horizontal pass (HResizeLinear, exact integers): two taps before xmax, then the one pixel * 2048
    x_next = np.minimum(x_first + 1, src_w - 1)
    rows = pixels[:, x_first] * x_weight[None, :, 0, None] + pixels[:, x_next] * x_weight[None, :, 1, None]
    rows[:, x_one_tap:] = pixels[:, x_first[x_one_tap:]] * _COEF_SCALE
    # vertical pass (VResizeLinear): rows sy and sy + 1, clamped to the image
    top, bottom = rows[y_first], rows[np.minimum(y_first + 1, src_h - 1)]
    b0, b1 = y_weight[:, 0, None, None], y_weight[:, 1, None, None]
    out = ((((top >> 4) * b0) >> 16) + (((bottom >> 4) * b1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)
