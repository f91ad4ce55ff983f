"""router/pipeline.py: one case end to end; what varies per case reaches the predictor as an argument."""

from __future__ import annotations

import builtins
import io
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from models.pool import ModelPool
from router.casefile import CaseError, read_headers
from router.memory import GIB, Warmth, estimate_case
from router.pipeline import Segmenter
from router.routing import RoutingTable
from tests.helpers import forged_npz, write_case


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
        small = Segmenter(table, pool, lambda: estimate.by_batch[8]).segment_file(path)
    finally:
        seg_log.removeHandler(lines)
    assert lines.lines == ["2DBox_Endoscopy_many.npz: decoding 8 boxes at a time to fit in memory (needs "
                           f"{estimate.by_batch[16] / (1 << 30):.2f} GiB at 16, "
                           f"{estimate.by_batch[8] / (1 << 30):.2f} GiB available)"]
    assert predictor.largest_decoded_batch == 8, "the largest batch decoded is the one the guard chose"
    assert predictor.decode_batch == 16, "the predictor's own batch is not rewritten"
    whole = Segmenter(table, pool, None).segment_file(path)
    assert predictor.largest_decoded_batch == 16
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


class BoxFilling:
    """A predictor without a model: each box's mask is the box filled. It has what the memory guard reads of
    a SamPredictor (its decoder batch, how warm it is, its cache's budget)."""

    decode_batch, largest_decoded_batch, encoder_calls = 16, 0, 0
    cache = SimpleNamespace(budget_bytes=0)

    def reset(self) -> None:
        self.shape = (0, 0)

    def set_image(self, image: np.ndarray, *, key=None) -> None:
        self.shape = image.shape[:2]

    def predict(self, boxes: np.ndarray, batch: int | None = None) -> np.ndarray:
        masks = np.zeros((len(boxes), *self.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes).astype(int), strict=True):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return masks

    def predict_scored(self, boxes: np.ndarray, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(boxes, batch), np.ones(len(boxes))


def opens_of(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every later open of `path` in this process (builtins.open: numpy, zipfile.is_zipfile; io.open:
    zipfile.ZipFile, pathlib), appended to the list returned."""
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and os.path.abspath(file) == os.path.abspath(path):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    return opened


@pytest.mark.parametrize("memory", [lambda: 64 * GIB, None], ids=["guarded", "unguarded"])
def test_a_case_file_is_opened_once(tmp_path, monkeypatch, memory) -> None:
    """Headers for the memory guard, the stored boxes, then the arrays: one open of the file for all."""
    image = np.zeros((40, 50, 3), np.uint8)
    path = write_case(tmp_path / "2DBox_Endoscopy_a.npz", imgs=image, boxes=np.array([[5, 6, 20, 30]]))
    pool = ModelPool(tmp_path, 1, "fp32", available={"litemedsam"}, make_predictor=lambda *args, **kwargs: BoxFilling())
    opened = opens_of(path, monkeypatch)
    result = Segmenter(RoutingTable.load(), pool, memory).segment_file(path, tmp_path / "out" / path.name)
    assert len(opened) == 1, opened
    expected = np.zeros((40, 50), np.uint8)
    expected[6:31, 5:21] = 1
    assert np.array_equal(result.segs, expected) and result.case.name == "2DBox_Endoscopy_a"
    with np.load(tmp_path / "out" / path.name) as npz:
        assert np.array_equal(npz["segs"], expected)


def test_the_guard_refuses_a_bomb_from_its_header_before_loading_it(tmp_path, monkeypatch) -> None:
    """A 10.8 GB image declared in 1 KiB: refused by its need (loading it would fail otherwise), one open."""
    path = forged_npz(tmp_path / "3DBox_CT_bomb.npz", (1200, 3000, 3000))
    pool = ModelPool(tmp_path, 1, "fp32", available={"litemedsam"}, make_predictor=lambda *args, **kwargs: BoxFilling())
    opened = opens_of(path, monkeypatch)
    with pytest.raises(CaseError, match=r"needs \d+\.\d\d GiB of memory, 7\.00 GiB available"):
        Segmenter(RoutingTable.load(), pool, lambda: 7 * GIB).segment_file(path)
    assert len(opened) == 1, opened


def test_set_image_takes_its_key_by_keyword_only():
    """SAM's set_image(image, image_format): a call ported from SAM, set_image(image, "RGB"), must fail
    rather than key the embedding cache on "RGB" (the predictor, the strategies' view of it, their protocol)."""
    import inspect

    from models.predictor import SamPredictor
    from router.pipeline import BatchedPredictor
    from router.strategies import BoxPredictor

    for owner in (SamPredictor, BatchedPredictor, BoxPredictor):
        assert inspect.signature(owner.set_image).parameters["key"].kind is inspect.Parameter.KEYWORD_ONLY, owner
