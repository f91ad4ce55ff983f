"""Zoomed decoding of small boxes (router/strategies/zoom.py, image2d's zoom parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from models.boxes import boxes_from_labels, clip_to_boxes
from models.transforms import stability_scores
from router.strategies.image2d import Image2dParams, segment_image2d
from router.strategies.zoom import fit_window, plan_windows
from tests.helpers import dice


def _random_boxes(rng: np.random.Generator, count: int, image_hw: tuple[int, int], max_side: int) -> np.ndarray:
    height, width = image_hw
    sides = rng.integers(1, max_side, (count, 2))
    x0, y0 = rng.integers(0, width - sides[:, 0]), rng.integers(0, height - sides[:, 1])
    return np.stack([x0, y0, x0 + sides[:, 0] - 1, y0 + sides[:, 1] - 1], axis=1)


@pytest.mark.parametrize("image_hw", [(512, 512), (300, 900), (1000, 200)])
def test_every_box_once_and_inside_its_window(image_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(image_hw))
    boxes = np.concatenate([_random_boxes(rng, 150, image_hw, 40), _random_boxes(rng, 5, image_hw, 180)])
    plan = plan_windows(boxes, image_hw, zoom_below=0.1, tile_scale=3.0, min_window=128, max_windows=64)
    seen = np.concatenate([indices for _, indices in plan])
    assert sorted(seen.tolist()) == list(range(len(boxes)))
    zoomed = 0
    for window, indices in plan:
        if window is None:
            continue
        y0, x0, y1, x1 = window
        assert 0 <= y0 < y1 <= image_hw[0] and 0 <= x0 < x1 <= image_hw[1]
        assert (y1 - y0, x1 - x0) != image_hw
        chosen = boxes[indices]
        assert np.all((chosen[:, 0] >= x0) & (chosen[:, 1] >= y0) & (chosen[:, 2] < x1) & (chosen[:, 3] < y1))
        zoomed += len(indices)
    assert zoomed > 100  # most small boxes are zoomed
    longest = max(image_hw)
    big = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1 >= 0.1 * longest
    whole = next((indices for window, indices in plan if window is None), np.array([], int))
    assert set(np.flatnonzero(big)) <= set(whole.tolist())  # large boxes are never zoomed


def test_window_count_is_capped() -> None:
    rng = np.random.default_rng(7)
    boxes = _random_boxes(rng, 2000, (2048, 2048), 30)
    uncapped = plan_windows(boxes, (2048, 2048), 0.1, 3.0, 64, max_windows=10_000)
    capped = plan_windows(boxes, (2048, 2048), 0.1, 3.0, 64, max_windows=40)
    assert len(uncapped) > 100 and len(capped) <= 41  # + the whole image for boxes that fit no tile
    assert sorted(np.concatenate([i for _, i in capped]).tolist()) == list(range(len(boxes)))


def test_no_zoom_is_one_whole_image_pass() -> None:
    boxes = np.array([[10, 10, 20, 20], [100, 100, 300, 300]])
    (window, indices), = plan_windows(boxes, (512, 512), zoom_below=0.0, tile_scale=3.0, min_window=256, max_windows=64)
    assert window is None and indices.tolist() == [0, 1]


def test_window_is_shifted_inside_or_clipped_to_the_image() -> None:
    assert fit_window(-20, 490, 64, (512, 512)) == (0, 448, 64, 512)
    assert fit_window(10, 10, 300, (200, 512)) == (0, 10, 200, 310)


@pytest.mark.parametrize(("zoom_below", "tile_scale"), [(-0.1, 3.0), (1.5, 3.0), (0.1, 0.5)])
def test_bad_zoom_parameters_are_refused(zoom_below: float, tile_scale: float) -> None:
    with pytest.raises(ValueError):
        Image2dParams(zoom_below=zoom_below, tile_scale=tile_scale)


def test_zoom_segments_small_real_nuclei_better(nuclei, litemedsam) -> None:
    """The stardist wheel's real nuclei (~24 px in 512 px): decoded in zoomed tiles they come out better."""
    image, labels = nuclei
    boxes = boxes_from_labels(labels)
    calls = litemedsam.encoder_calls
    whole = segment_image2d(image, boxes, litemedsam, Image2dParams(zoom_below=0.0, clip_to_box=False))
    assert litemedsam.encoder_calls - calls == 1
    zoomed = segment_image2d(image, boxes, litemedsam,
                             Image2dParams(zoom_stability=2.0, max_windows=64, clip_to_box=False))  # all
    every_tile = litemedsam.encoder_calls - calls - 1
    assert 1 < every_tile - 1 <= 64  # tiles shared by neighbouring boxes (+ the whole image)

    def mean_dice(segs: np.ndarray) -> float:
        return float(np.mean([dice(segs == label, labels == label) for label in range(1, len(boxes) + 1)]))

    assert mean_dice(zoomed) > mean_dice(whole) + 0.05
    # the default: clipped to the boxes, and only the doubtful small boxes zoomed, in fewer passes
    before = litemedsam.encoder_calls
    default = segment_image2d(image, boxes, litemedsam)
    assert litemedsam.encoder_calls - before <= every_tile / 3  # the third of issue 23
    assert mean_dice(default) > mean_dice(whole) + 0.05
    clipped = segment_image2d(image, boxes, litemedsam, Image2dParams(zoom_below=0.0))
    assert mean_dice(clipped) > mean_dice(whole)  # a mask's leak out of its box is cut


def test_clip_to_boxes_clears_outside_each_box() -> None:
    masks = np.ones((2, 10, 12), bool)
    clipped = clip_to_boxes(masks, np.array([[2, 3, 5, 4], [0.4, 0, 11, 9.2]]))
    assert clipped[0].sum() == 4 * 2 and clipped[0, 3:5, 2:6].all()
    assert clipped[1].all()  # a box over the whole image (rounded outwards) keeps everything


def test_stability_is_one_for_a_sharp_mask_and_low_for_a_soft_one() -> None:
    sharp = np.where(np.arange(64)[None, :] < 32, 10.0, -10.0) * np.ones((64, 1))
    soft = np.linspace(-4, 4, 64)[None, :] * np.ones((64, 1))
    scores = stability_scores(np.stack([sharp, soft, np.full((64, 64), -5.0)]))
    assert scores[0] == 1.0 and 0.5 < scores[1] < 0.8 and scores[2] == 0.0
