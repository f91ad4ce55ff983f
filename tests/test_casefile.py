"""Case reading and validation: intensity conversion, box coordinates far outside the image, one box check
for read_case, seg-convert and the memory guard."""

from __future__ import annotations

import numpy as np
import pytest

from router.casefile import CaseError, read_case
from router.validation import to_uint8, validate_case
from tests.helpers import strategy_route, write_case


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


def test_validate_case_coerces_arrays_without_files():
    """validate_case is read_case without the file: a grey float image becomes RGB uint8, one box given as
    (4,) becomes (1, 4) and is clipped, a 3D case without spacing is fine."""
    image = np.linspace(0.0, 1.0, 12 * 10).reshape(12, 10)
    checked = validate_case({"imgs": image, "boxes": np.array([-3.4, 2.6, 40.0, 8.0])}, 2)
    assert checked.image.shape == (12, 10, 3) and checked.image.dtype == np.uint8
    assert checked.boxes.tolist() == [[0, 3, 9, 8]] and checked.boxes.dtype == np.int64
    volume = validate_case({"imgs": np.zeros((4, 6, 8), np.uint8), "boxes": np.array([[1, 1, 1, 2, 2, 2]])}, 3)
    assert volume.image.shape == (4, 6, 8) and volume.boxes.tolist() == [[1, 1, 1, 2, 2, 2]]
    with pytest.raises(CaseError, match=r"'spacing' must be 3 positive numbers, got \[1.0, 0.0, 1.0\]"):
        validate_case({"imgs": np.zeros((4, 6, 8)), "boxes": np.zeros((0, 6)), "spacing": np.array([1, 0, 1])}, 3)


@pytest.mark.parametrize(("spacing", "problem"), [
    (np.array([1.0, 0.0, 1.0]), "got [1.0, 0.0, 1.0]"),
    (np.array([1.0, np.nan, 1.0]), "got [1.0, nan, 1.0]"),
    (np.array([1.0, 1.0]), "got [1.0, 1.0]"),
])
def test_a_case_file_with_a_bad_spacing_is_refused_in_one_line(tmp_path, spacing, problem):
    """A 3D case file's spacing is checked though no strategy uses it (Case does not keep it): a bad one refuses
    the case with one line; a good one or none reads."""
    volume, boxes = np.zeros((4, 6, 8), np.uint8), np.array([[1, 1, 1, 2, 2, 2]])
    bad = write_case(tmp_path / "3DBox_CT_bad.npz", imgs=volume, boxes=boxes, spacing=spacing)
    with pytest.raises(CaseError) as refused:
        read_case(bad)
    assert str(refused.value) == f"'spacing' must be 3 positive numbers, {problem}"
    for name, stored in (("good", {"spacing": np.array([0.8, 0.8, 2.5])}), ("none", {})):
        case = read_case(write_case(tmp_path / f"3DBox_CT_{name}.npz", imgs=volume, boxes=boxes, **stored))
        assert case.image.shape == (4, 6, 8) and not hasattr(case, "spacing")


def test_one_box_check_for_read_case_convert_and_the_memory_guard(tmp_path):
    """A degenerate or wholly outside box: read_case and seg-convert refuse it with their messages, and
    the memory guard estimates only the reading (read_case refuses the case after it)."""
    from convert.boxes import check_boxes
    from convert.io import ConvertError
    from router.casefile import read_headers
    from router.memory import estimate_case

    image = np.zeros((16, 32, 3), np.uint8)
    good, degenerate, outside = np.array([[2, 3, 9, 9]]), np.array([[9, 3, 2, 9]]), np.array([[40, 3, 50, 9]])
    path = write_case(tmp_path / "2DBox_CT_x.npz", imgs=image, boxes=outside)
    with pytest.raises(CaseError, match=r"box 0 lies entirely outside the image of shape \(16, 32\): \[40, 3, 50, 9\]"):
        read_case(path)
    with pytest.raises(ConvertError, match=r"box 0 \[40, 3, 50, 9\] lies outside the image \(x, y\[, z\] size \[32"):
        check_boxes(outside, (16, 32))
    with pytest.raises(ConvertError, match=r"box 0 is degenerate \(a min corner exceeds its max corner\): \[9, 3, 2"):
        check_boxes(degenerate, (16, 32))
    assert check_boxes(np.array([[-5, 3, 40, 9]]), (16, 32)).tolist() == [[0, 3, 31, 9]]
    headers, route = read_headers(path), strategy_route("image2d")
    reading_only = estimate_case(2, headers, None, route).by_batch
    assert estimate_case(2, headers, degenerate, route).by_batch == reading_only
    assert estimate_case(2, headers, outside, route).by_batch == reading_only
    assert estimate_case(2, headers, good, route).by_batch[16] > reading_only[16]

def test_efficiency_log_removes_the_temp_file_a_kill_left_mid_write(tmp_path):
    from router.efficiency import EfficiencyLog

    path = tmp_path / "efficiency.0.csv"
    killed = tmp_path / ".efficiency.0.csv.hewgfigi.tmp"  # what write_text_atomic leaves when SIGKILLed
    other_part = tmp_path / ".efficiency.1.csv.abcd1234.tmp"  # another part's, maybe being written now
    killed.write_text("case,seconds\na,1.0")
    other_part.write_text("case,seconds\n")
    EfficiencyLog(path, resume=True)
    assert not killed.exists() and other_part.exists()


def test_run_record_says_what_made_the_outputs_and_survives_a_resume(tmp_path, ir_dir):
    import json

    from models.pool import ModelPool
    from router.provenance import RunRecord, run_facts
    from router.routing import RoutingTable

    table = RoutingTable.load()
    image2d, propagate = table.route(2, "CT"), table.route(3, "CT")

    pool = ModelPool(ir_dir, 1, "fp32")
    facts = run_facts(pool, None, {"threads": 1})
    assert facts["precision"]["litemedsam"] == "fp32" and facts["openvino"] and facts["cpu"]
    assert {"litemedsam_encoder.xml", "litemedsam_encoder.bin"} <= set(facts["models"])
    assert "[default]" in facts["routing_table"]["text"] and facts["seg"]["version"]
    path = tmp_path / "run.json"
    (tmp_path / ".run.json.k1ll3d.tmp").write_text("{")  # a kill during a write
    record = RunRecord(path, facts)
    record.record("a", RunRecord.entry(image2d, "fp32"))
    record.record("b", RunRecord.entry(propagate, "fp32"))
    assert not (tmp_path / ".run.json.k1ll3d.tmp").exists()
    resumed = RunRecord(path, facts, resume=True)
    resumed.keep_earlier("a")
    resumed.record("c", RunRecord.entry(propagate, "fp32"))
    cases = json.loads(path.read_text())["cases"]
    assert sorted(cases) == ["a", "c"]
    assert {name: (case["route"], case["precision"]) for name, case in cases.items()} == {
        "a": ("litemedsam/image2d", "fp32"), "c": ("litemedsam/propagate", "fp32")}
    assert cases["c"]["params"]["skip_step"] == propagate.params.skip_step and cases["a"]["strategy"] == "image2d"
