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


def test_stale_temps_of_a_name_with_glob_characters_are_removed(tmp_path):
    """A killed write's temp file goes whatever the case name holds; another case's stays."""
    from router.casefile import remove_stale_temps

    name = "2DBox_US_scan[1].npz"
    mine, other = tmp_path / f".{name}.k1ll3d.tmp", tmp_path / ".2DBox_US_scan1.npz.k1ll3d.tmp"
    for path in (mine, other):
        path.write_bytes(b"half")
    remove_stale_temps(tmp_path / name)
    assert not mine.exists() and other.exists()


def test_efficiency_log_keeps_earlier_rows_only_for_skipped_cases(tmp_path):
    from router.efficiency import EfficiencyLog, read_efficiency

    path = tmp_path / "efficiency.csv"
    path.write_text("case,seconds\na,1.5000\nb,2.0000\n")
    log = EfficiencyLog(path, resume=True)
    log.keep_earlier("a")
    log.keep_earlier("never_timed")
    log.record("b", 3.25)
    assert read_efficiency(path) == {"a": 1.5, "never_timed": 0.0, "b": 3.25}
    assert len(log) == 3 and "b" in log
    fresh = EfficiencyLog(path)  # not resuming: earlier rows are not carried
    fresh.record("c", 1.0)
    assert read_efficiency(path) == {"c": 1.0}
