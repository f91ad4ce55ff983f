"""router/pipeline.py: one case end to end; what varies per case reaches the predictor as an argument."""

from __future__ import annotations

import logging

import numpy as np

from models.pool import ModelPool
from router.casefile import read_headers
from router.memory import Warmth, estimate_case
from router.pipeline import segment_file
from router.routing import RoutingTable
from tests.helpers import write_case


class Lines(logging.Handler):
    """The "seg" logger's messages (predict.main, run earlier in this process, stops its propagation)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_memory_guard_passes_a_smaller_decoder_batch_and_leaves_the_predictor_as_it_was(ir_dir, tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (256, 256, 3), dtype=np.uint8)
    corners = rng.integers(0, 200, (40, 2))
    boxes = np.concatenate([corners, corners + 40], axis=1)
    path = write_case(tmp_path / "2DBox_Endoscopy_many.npz", imgs=image, boxes=boxes)
    table = RoutingTable.load()
    pool = ModelPool(ir_dir, 1, "fp32")
    predictor = pool.get("litemedsam")
    route = table.route(2, "Endoscopy", pool.available)
    estimate = estimate_case(2, read_headers(path), boxes, route, Warmth(), predictor.cache.budget_bytes)
    seg_log = logging.getLogger("seg")
    lines = Lines()
    seg_log.addHandler(lines)
    try:
        small = segment_file(path, table, pool, memory=lambda: estimate.by_batch[8])
    finally:
        seg_log.removeHandler(lines)
    assert lines.lines == ["2DBox_Endoscopy_many.npz: decoding 8 boxes at a time to fit in memory (needs "
                           f"{estimate.by_batch[16] / (1 << 30):.2f} GiB at 16, "
                           f"{estimate.by_batch[8] / (1 << 30):.2f} GiB available)"]
    assert predictor.decoded_batch == 8, "the largest batch decoded is the one the guard chose"
    assert predictor.decode_batch == 16, "the predictor's own batch is not rewritten"
    whole = segment_file(path, table, pool, memory=None)
    assert predictor.decoded_batch == 16
    assert np.mean(small.segs == whole.segs) > 0.999  # the batch changes the memory, not the masks


def test_pool_routes_to_the_models_it_is_given(ir_dir, tmp_path) -> None:
    assert ModelPool(tmp_path).available == set()  # nothing exported there
    assert "litemedsam" in ModelPool(ir_dir).available
    pool = ModelPool(ir_dir, available=set())
    assert pool.available == set()
    try:
        pool.get("litemedsam")
    except FileNotFoundError as error:
        assert "'litemedsam' is not exported" in str(error)
    else:
        raise AssertionError("a model left out of `available` must not compile")
