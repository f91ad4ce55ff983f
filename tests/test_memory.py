"""Memory guard (router/memory.py): npy headers without decompressing, cgroup/MemAvailable budget,
the estimate and the decoder batch it picks. Unit tests: real files, no models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.registry import get_spec
from models.transforms import AXIS_CACHE_SIZE
from router.casefile import CaseError, read_headers
from router.memory import (
    GIB,
    MIB,
    Warmth,
    available_bytes,
    cgroup_memory_limit,
    estimate_case,
    fitting_decode_batch,
)
from router.routing import Route
from tests.helpers import forged_npz, strategy_route, write_case


def headers_of(tmp_path: Path, image: np.ndarray) -> dict:
    return read_headers(write_case(tmp_path / "case.npz", imgs=image))


def test_headers_give_shape_and_dtype_without_decompressing(tmp_path):
    path = forged_npz(tmp_path / "3DBox_CT_bomb.npz", (2000, 2000, 2000))
    headers = read_headers(path)
    assert headers["imgs"].shape == (2000, 2000, 2000) and headers["imgs"].dtype == np.uint8
    assert headers["imgs"].nbytes == 8 * 10**9 and headers["boxes"].shape == (1, 6)
    assert path.stat().st_size < 10_000  # what the headers came from


def test_headers_of_a_real_case_and_of_a_non_zip(tmp_path):
    path = write_case(tmp_path / "2DBox_US_a.npz", imgs=np.zeros((30, 40), np.float32), boxes=np.zeros((3, 4)))
    headers = read_headers(path)
    assert headers["imgs"].shape == (30, 40) and headers["imgs"].dtype == np.float32
    assert headers["imgs"].nbytes == 30 * 40 * 4
    (tmp_path / "2DBox_US_b.npz").write_bytes(b"not a zip")
    with pytest.raises(CaseError, match="not a readable .npz"):
        read_headers(tmp_path / "2DBox_US_b.npz")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "1073741824\n"}, GIB),  # v2 with docker -m 1g
        ({"memory.max": "max\n"}, None),  # v2 unlimited
        ({"memory/memory.limit_in_bytes": "536870912\n"}, 512 * MIB),  # v1
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1 unlimited (2**63 rounded)
        ({}, None),  # no cgroup files at all
    ],
)
def test_cgroup_memory_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_memory_limit(tmp_path) == expected


def test_available_is_the_limit_less_resident_memory_capped_by_memavailable(tmp_path):
    (tmp_path / "memory.max").write_text(f"{2 * GIB}\n")
    status, meminfo = tmp_path / "status", tmp_path / "meminfo"
    status.write_text("Name:\tpython\nVmRSS:\t  524288 kB\n")
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4194304 kB\n")
    assert available_bytes(tmp_path, meminfo, status) == 2 * GIB - 512 * MIB
    meminfo.write_text("MemAvailable: 1048576 kB\n")  # the host has less free than the cgroup allows
    assert available_bytes(tmp_path, meminfo, status) == GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert available_bytes(tmp_path, meminfo, status) == GIB
    assert available_bytes(tmp_path / "none", tmp_path / "none", status) is None


def test_a_bomb_is_refused_naming_both_sizes(tmp_path):
    headers = read_headers(forged_npz(tmp_path / "3DBox_CT_bomb.npz", (1200, 3000, 3000)))
    estimate = estimate_case(3, headers, np.array([[1, 1, 1, 4, 4, 4]]), strategy_route("propagate"))
    assert estimate.by_batch[1] > 10.8e9
    with pytest.raises(CaseError, match=r"needs \d+\.\d\d GiB of memory, 7\.00 GiB available"):
        fitting_decode_batch(estimate, 7 * GIB)


def test_fewer_boxes_per_decoder_call_when_that_fits(tmp_path):
    headers = headers_of(tmp_path, np.zeros((256, 256, 3), np.uint8))
    boxes = np.array([[10, 10, 50, 50]] * 40)
    estimate = estimate_case(2, headers, boxes, strategy_route("image2d"))
    assert sorted(estimate.by_batch, reverse=True) == [16, 8, 4, 2, 1]  # the predictor's batch, halved
    needs = [estimate.by_batch[batch] for batch in (16, 8, 4, 2, 1)]
    assert needs == sorted(needs, reverse=True) and needs[0] > needs[-1] + 400 * MIB  # 15 boxes x 32 MiB
    assert fitting_decode_batch(estimate, needs[0]) == 16
    assert fitting_decode_batch(estimate, needs[0] - 1) == 8
    assert fitting_decode_batch(estimate, needs[-1]) == 1
    assert fitting_decode_batch(estimate, None) == 16  # memory unknown: no guard
    with pytest.raises(CaseError, match="needs"):
        fitting_decode_batch(estimate, needs[-1] - 1)
    # a predictor made with a larger decoder batch is planned from its own (it was a KeyError: 32)
    larger = estimate_case(2, headers, boxes, strategy_route("image2d"), default_batch=32)
    assert sorted(larger.by_batch) == [1, 2, 4, 8, 16, 32] and larger.by_batch[32] > needs[0]
    assert fitting_decode_batch(larger, None, 32) == 32 and fitting_decode_batch(larger, needs[0], 32) == 16
    # a warm predictor has its buffers already: only growth beyond its largest batch counts
    warm = estimate_case(2, headers, boxes, strategy_route("image2d"), Warmth(encoded=True, largest_decoded_batch=16))
    assert warm.by_batch[16] == warm.by_batch[1] < needs[-1]


def test_estimate_grows_with_the_volume_and_the_votes(tmp_path):
    small = headers_of(tmp_path, np.zeros((20, 64, 64), np.uint8))
    boxes = np.array([[5, 5, 2, 40, 40, 15]])
    propagate = estimate_case(3, small, boxes, strategy_route("propagate")).by_batch[16]
    vote = estimate_case(3, small, boxes, strategy_route("triplanar_vote")).by_batch[16]
    assert vote > propagate
    big = headers_of(tmp_path, np.zeros((200, 64, 64), np.uint8))
    assert estimate_case(3, big, boxes, strategy_route("propagate")).by_batch[16] > propagate
    floats = headers_of(tmp_path, np.zeros((20, 64, 64), np.float32))
    assert estimate_case(3, floats, boxes, strategy_route("propagate")).by_batch[16] >= propagate


def test_the_strategy_estimates_its_own_working_memory(tmp_path, monkeypatch):
    """estimate_case asks the route's strategy (a new strategy needs no entry here) and the model's spec."""
    from router.strategies import Strategy, registry
    from router.strategies.image2d import Image2dParams

    class Fake2d(Strategy[Image2dParams]):
        name, dim, params = "fake2d", 2, Image2dParams

        def run(self, image, boxes, predictor, params, on_slice=None):
            raise AssertionError("an estimate runs nothing")

        def working_bytes(self, shape, boxes, params, embeddings):
            return 7 * GIB

        def boxes_per_call(self, shape, boxes, params):
            return 1

    monkeypatch.setitem(registry.STRATEGIES, "fake2d", Fake2d())
    headers = headers_of(tmp_path, np.zeros((64, 64, 3), np.uint8))
    boxes = np.array([[1, 1, 30, 30]] * 20)
    estimate = estimate_case(2, headers, boxes, Route("litemedsam", "fake2d", Image2dParams()))
    assert 7 * GIB < estimate.by_batch[16] == estimate.by_batch[1] < 8 * GIB  # one box per call: no batch grows
    guessed = estimate_case(2, headers, boxes, Route("efficientvit_sam_l0", "fake2d", Image2dParams()))
    assert guessed.by_batch[1] > estimate.by_batch[1]  # unmeasured buffers: the larger guess
    with pytest.raises(KeyError, match="unknown strategy 'nothing'"):
        estimate_case(2, headers, boxes, Route("litemedsam", "nothing", Image2dParams()))


def test_a_2d_estimate_follows_the_models_mask_frame(tmp_path):
    """EfficientViT-SAM's masks go up to a 1024 frame, LiteMedSAM's stay at 256: its resize matrices are larger."""
    headers = headers_of(tmp_path, np.zeros((512, 512, 3), np.uint8))
    boxes = np.array([[10, 10, 50, 50]])
    lite = estimate_case(2, headers, boxes, strategy_route("image2d", "litemedsam")).by_batch[16]
    evit = estimate_case(2, headers, boxes, strategy_route("image2d", "efficientvit_sam_l0")).by_batch[16]
    matrices = AXIS_CACHE_SIZE * (512 + 512) * (1024 - 256) * 4
    buffers = get_spec("efficientvit_sam_l0").buffers, get_spec("litemedsam").buffers
    model_difference = (buffers[0].first_encode + buffers[0].first_decode - buffers[1].first_encode
                        - buffers[1].first_decode)
    assert evit - lite >= matrices + model_difference
