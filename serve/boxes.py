"""The client's `bbox_coords` -> a BoxPrompt in the uploaded volume's axes.

nnInteractive's box is three half-open ranges `[[lo0, hi0], [lo1, hi1], [lo2, hi2]]` in the order of the
uploaded array's spatial axes (whatever order the viewer keeps: napari (z, y, x), others (x, y, z)). An
axis of extent 1 is the slice the box was drawn on (a 2D box, in any of the three views); extent > 1 on
every axis is a 3D box. A box partly outside the volume is clipped, as seg-predict clips a case's boxes;
one wholly outside, empty or not numeric is refused (serve.protocol.ProtocolError, 400).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.protocol import ProtocolError


@dataclass(frozen=True)
class BoxPrompt:
    """A box in array axes: `lows` inclusive, `highs` exclusive, each (3,), inside the volume."""

    lows: tuple[int, int, int]
    highs: tuple[int, int, int]

    @property
    def extent(self) -> tuple[int, int, int]:
        return (self.highs[0] - self.lows[0], self.highs[1] - self.lows[1], self.highs[2] - self.lows[2])

    def slice_axis(self, shape: tuple[int, ...]) -> int | None:
        """The axis the box was drawn on (its extent is 1), None for a 3D box. Where several axes have extent
        1, the one the volume itself is 1 thick along (napari's 2D images arrive as (1, H, W)), else the first."""
        flat = [axis for axis, side in enumerate(self.extent) if side == 1]
        if not flat:
            return None
        thin = [axis for axis in flat if shape[axis] == 1]
        return (thin or flat)[0]

    def slicer(self) -> tuple[slice, slice, slice]:
        return tuple(slice(low, high) for low, high in zip(self.lows, self.highs, strict=True))  # type: ignore[return-value]

    def as_list(self) -> list[list[int]]:
        return [[low, high] for low, high in zip(self.lows, self.highs, strict=True)]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(400, f"bbox_coords must hold finite numbers, got {str(value)[:40]!r}")
    return float(value)


def parse_box(coords: Any, shape: tuple[int, int, int]) -> BoxPrompt:
    """`bbox_coords` as the JSON body carries it, against a volume of `shape` -> BoxPrompt (clipped).

    Coordinates are rounded to whole voxels as nnInteractive rounds them. Raises ProtocolError (400) for
    anything but three [low, high) pairs of finite numbers with low < high, or a box wholly outside.
    """
    if not isinstance(coords, list | tuple) or len(coords) != 3 or not all(
            isinstance(pair, list | tuple) and len(pair) == 2 for pair in coords):
        raise ProtocolError(400, "bbox_coords must be three [low, high) pairs, one per axis of the image")
    lows, highs = [], []
    for axis, (low, high) in enumerate(coords):
        low_voxel, high_voxel = round(_number(low)), round(_number(high))
        if high_voxel <= low_voxel:
            raise ProtocolError(400, f"bbox_coords axis {axis} is empty: [{low}, {high})")
        if high_voxel <= 0 or low_voxel >= shape[axis]:
            raise ProtocolError(400, f"bbox_coords {[list(pair) for pair in coords]} lie outside the image "
                                     f"of shape {list(shape)}")
        lows.append(max(low_voxel, 0))
        highs.append(min(high_voxel, shape[axis]))
    return BoxPrompt((lows[0], lows[1], lows[2]), (highs[0], highs[1], highs[2]))


def plane_box(box: BoxPrompt, axis: int) -> np.ndarray:
    """A 2D box's rectangle on its slice as the predictor takes it: (4,) [x0, y0, x1, y1] inclusive, where
    y runs along the first of the other two axes and x along the second (the slice is `volume[axis] = z`
    with the volume's remaining axes in their order)."""
    rows, cols = [other for other in range(3) if other != axis]
    return np.array([box.lows[cols], box.lows[rows], box.highs[cols] - 1, box.highs[rows] - 1], np.int64)


def volume_box(box: BoxPrompt) -> np.ndarray:
    """A 3D box as a 3D strategy takes it on the volume, axes (0, 1, 2) read as (z, y, x):
    (6,) [x0, y0, z0, x1, y1, z1] inclusive."""
    (z0, y0, x0), (z1, y1, x1) = box.lows, box.highs
    return np.array([x0, y0, z0, x1 - 1, y1 - 1, z1 - 1], np.int64)
