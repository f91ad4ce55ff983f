"""Case reading: intensity conversion and box coordinates far outside the image."""

from __future__ import annotations

import numpy as np
import pytest

from router.casefile import CaseError, read_case, to_uint8
from tests.helpers import write_case


def test_float_image_in_unit_range_keeps_its_grey_levels():
    image = np.linspace(0.0, 1.0, 256 * 4).reshape(32, 32)
    converted = to_uint8(image)
    # Rounding [0, 1] floats directly would leave only 0 and 1.
    assert len(np.unique(converted)) == 256
    assert converted.min() == 0 and converted.max() == 255


@pytest.mark.parametrize(
    ("image", "levels"),
    [
        (np.arange(0, 200, dtype=np.uint16).reshape(10, 20), 200),  # integers in 0..255: kept as they are
        (np.arange(0, 200, dtype=np.float32).reshape(10, 20), 200),  # floats in 0..255: rounded
    ],
)
def test_values_already_in_byte_range_are_kept(image, levels):
    converted = to_uint8(image)
    assert np.array_equal(converted, image.astype(np.uint8)) and len(np.unique(converted)) == levels


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        (np.array([[2.0, 3.0, 1e30, 1e30]]), [2, 3, 31, 15]),  # float far beyond the image: clipped
        (np.array([[2, 3, 2**64 - 1, 9]], np.uint64), [2, 3, 31, 9]),  # uint64 above int64's range
    ],
)
def test_far_out_box_corners_are_clipped(tmp_path, boxes, expected):
    path = write_case(tmp_path / "2DBox_CT_far.npz", imgs=np.zeros((16, 32, 3), np.uint8), boxes=boxes)
    assert read_case(path).boxes.tolist() == [expected]


def test_box_wholly_beyond_the_image_is_an_error(tmp_path):
    path = write_case(tmp_path / "2DBox_CT_far.npz", imgs=np.zeros((16, 32, 3), np.uint8),
                      boxes=np.array([[-1e30, 2.0, -1e29, 9.0]]))
    with pytest.raises(CaseError, match="entirely outside"):
        read_case(path)
