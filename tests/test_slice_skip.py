"""Skipping slices in 3D sweeps: shape-based interpolation and the rule that decides where it applies.

Unit tests: a geometric predictor (the prompt box's inscribed ellipse) stands in for the model, so the
rule is checked on its own; tests/test_strategies_3d.py runs the real LiteMedSAM with skipping on.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.predictor import Embedding
from router.strategies.interpolation import interpolate_masks, mask_dice, signed_distance
from router.strategies.propagate3d import SkipParams, propagate_masks, propagation_steps
from router.strategies.triplanar import TriplanarParams, segment_triplanar


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_interpolation_between_two_discs_grows_and_moves_smoothly() -> None:
    first, last = disc((64, 64), (28, 28), 6), disc((64, 64), (34, 34), 12)  # overlapping, as slices' masks
    between = interpolate_masks(first, last, 3)
    assert between.shape == (3, 64, 64) and between.dtype == bool
    areas = [first.sum(), *between.sum(axis=(1, 2)), last.sum()]
    assert all(a < b for a, b in zip(areas, areas[1:], strict=False))  # grows monotonically
    centres = [np.argwhere(mask).mean(axis=0) for mask in (first, *between, last)]
    assert all(np.all(a < b) for a, b in zip(centres, centres[1:], strict=False))  # and moves
    middle = disc((64, 64), (31, 31), 9)
    assert mask_dice(between[1], middle) > 0.9  # halfway: about the halfway disc


def test_interpolation_of_equal_or_empty_masks_gives_them_back() -> None:
    mask = disc((40, 50), (20, 25), 8)
    np.testing.assert_array_equal(interpolate_masks(mask, mask, 2), np.stack([mask, mask]))
    empty = np.zeros((40, 50), bool)
    assert not interpolate_masks(empty, empty, 4).any()
    assert interpolate_masks(mask, mask, 0).shape == (0, 40, 50)
    distance = signed_distance(mask)
    assert (distance[mask] < 0).all() and (distance[~mask] > 0).all()


def test_the_rule_skips_only_where_both_masks_are_big_enough_and_agree() -> None:
    big, shifted = disc((64, 64), (30, 30), 10), disc((64, 64), (32, 30), 10)
    rule = SkipParams(skip_step=3, skip_dice=0.8, skip_min_area=100)
    assert rule.agree(big, shifted)
    assert not rule.agree(big, disc((64, 64), (30, 50), 10))  # moved too far
    assert not rule.agree(disc((64, 64), (30, 30), 4), disc((64, 64), (30, 30), 4))  # too small: never skipped
    assert not rule.agree(big, np.zeros_like(big))  # one lost: decode between
    assert rule.agree(np.zeros_like(big), np.zeros_like(big))


@pytest.mark.parametrize("bad", [{"skip_step": 0}, {"skip_step": 9}, {"skip_step": 2.5}, {"skip_dice": 1.5},
                                 {"skip_min_area": -1}])
def test_skip_params_refuse_values_they_cannot_run_with(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SkipParams(**bad)


class EllipsePredictor:
    """Predicts the ellipse inscribed in each prompt box, cut to the image's object (pixels > 0); counts
    the slices it is shown."""

    def __init__(self) -> None:
        self.encoded: list = []
        self.image = np.zeros((1, 1), np.uint8)

    def set_image(self, image: np.ndarray, *, key=None) -> None:
        if key not in self.encoded:
            self.encoded.append(key)
        self.image = image

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        height, width = self.image.shape
        yy, xx = np.mgrid[:height, :width]
        masks = []
        for x0, y0, x1, y1 in boxes:
            cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
            masks.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) & (self.image > 0))
        return np.stack(masks) if masks else np.zeros((0, height, width), bool)


def rule(step: int, dice: float, min_area: int, outer_step: int = 1, blend_outer: bool = False,
         blend_core: bool = False) -> SkipParams:
    """Every `step`-th core slice decoded, the ones between interpolated by `dice` and `min_area`; beyond the
    core every slice (outer_step 1) and no blends unless told otherwise: the rule these tests take apart."""
    return SkipParams(skip_step=step, skip_dice=dice, skip_min_area=min_area, skip_outer_step=outer_step,
                      skip_blend_outer=blend_outer, skip_blend_core=blend_core)


def ball_volume(shape=(40, 64, 64), centre=(20, 32, 32), radius=(15, 20, 20)) -> np.ndarray:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    inside = sum(((grid - c) / r) ** 2 for grid, c, r in zip((zz, yy, xx), centre, radius, strict=True)) <= 1
    return (inside * 200).astype(np.uint8)


def test_skipping_yields_every_pair_once_with_fewer_encoder_passes_and_the_same_object() -> None:
    volume = ball_volume()
    boxes = np.array([[12, 12, 5, 52, 52, 35], [20, 20, 10, 44, 44, 20]])
    results = {}
    for step in (1, 4):
        predictor, calls = EllipsePredictor(), []
        out = list(propagate_masks(volume, boxes, predictor, core=1.0, skip=rule(step, 0.8, 20),
                                   on_slice=lambda c=calls: c.append(1)))
        pairs = [(z, int(index)) for z, active, _ in out for index in active]
        assert len(pairs) == len(set(pairs)) == sum(int(b[5] - b[2] + 1) for b in boxes)
        assert len(calls) == len(out) == propagation_steps(boxes)  # progress counts every slice, as before
        assert all(len(active) == len(masks) for _, active, masks in out)
        results[step] = ({(z, int(i)): m for z, active, masks in out for i, m in zip(active, masks, strict=True)},
                         len(predictor.encoded))
    full, skipped = results[1], results[4]
    assert skipped[1] <= 0.75 * full[1]  # 22 of 31: two boxes make five stretches, each decoded at both ends
    dices = [mask_dice(full[0][key], skipped[0][key]) for key in full[0] if full[0][key].any()]
    assert np.mean(dices) > 0.95


def test_slices_are_bisected_where_the_masks_disagree() -> None:
    volume = np.zeros((20, 48, 48), np.uint8)
    volume[:10, 5:20, 5:20] = 200  # the object jumps from one corner to the other at z = 10
    volume[10:, 28:43, 28:43] = 200
    predictor = EllipsePredictor()
    box = np.array([[0, 0, 0, 47, 47, 19]])
    list(propagate_masks(volume, box, predictor, core=1.0, skip=rule(4, 0.8, 0)))
    encoded = sorted(z for _, z in predictor.encoded)
    assert {9, 10} <= set(encoded)  # bisected down to both sides of the jump
    assert len(encoded) < 20  # and skipped elsewhere


def test_triplanar_vote_with_skipping_keeps_the_object() -> None:
    volume = ball_volume()
    boxes = np.array([[12, 12, 5, 52, 52, 35]])
    full_predictor, skip_predictor = EllipsePredictor(), EllipsePredictor()
    full = segment_triplanar(volume, boxes, full_predictor, TriplanarParams(core=1.0, skip_step=1))
    skipped = segment_triplanar(volume, boxes, skip_predictor,
                                TriplanarParams(core=1.0, skip_step=3, skip_dice=0.8, skip_min_area=20,
                                               skip_blend_core=False))
    assert mask_dice(full == 1, skipped == 1) > 0.95
    assert len(skip_predictor.encoded) <= 0.6 * len(full_predictor.encoded)  # 65 of 113: the poles change fast


def test_outer_step_one_decodes_every_slice_beyond_the_core() -> None:
    volume = ball_volume()
    box = np.array([[12, 12, 5, 52, 52, 35]])  # z 5..35, middle 20; core 0.5 reaches 7.5 slices: z 13..27
    predictor = EllipsePredictor()
    list(propagate_masks(volume, box, predictor, core=0.5, skip=rule(4, 0.5, 0, outer_step=1)))
    encoded = {z for _, z in predictor.encoded}
    assert set(range(5, 13)) | set(range(28, 36)) <= encoded  # beyond the core: every slice
    assert len(encoded & set(range(13, 28))) < 15  # inside it: some skipped
    outer = EllipsePredictor()
    list(propagate_masks(volume, box, outer, core=0.5, skip=rule(4, 0.5, 0, outer_step=2)))
    assert len({z for _, z in outer.encoded} & (set(range(5, 13)) | set(range(28, 36)))) < 16  # skipped there too


def test_bisection_decodes_only_where_the_masks_disagree() -> None:
    """An object that is constant but for a jump at z = 10: a sweep of step 8 bisects towards the jump and
    interpolates the agreeing halves, so it decodes fewer slices than deciding per step of 8 would."""
    volume = np.zeros((33, 48, 48), np.uint8)
    volume[:10, 5:20, 5:20] = 200
    volume[10:, 5:30, 5:30] = 200
    predictor = EllipsePredictor()
    box = np.array([[0, 0, 0, 47, 47, 32]])
    out = {z: masks for z, _, masks in propagate_masks(volume, box, predictor, core=1.0, skip=rule(8, 0.9, 0))}
    encoded = sorted(z for _, z in predictor.encoded)
    assert {9, 10} <= set(encoded)  # both sides of the jump are decoded: neither is interpolated across it
    assert len(encoded) <= 12  # of 33: 5 for the step-8 grid, bisection only in the step holding the jump
    full = EllipsePredictor()
    every = {z: masks for z, _, masks in propagate_masks(volume, box, full, core=1.0)}
    assert all(mask_dice(out[z][0], every[z][0]) > 0.97 for z in every)


class EmbeddingEllipsePredictor(EllipsePredictor):
    """EllipsePredictor whose 'embedding' is the image itself, so that a blend of two slices' embeddings is
    the blend of the slices, and whose object is where the image is over half of 255; counts decoder calls."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded = 0

    def get_image_embedding(self) -> Embedding:
        return Embedding(self.image[None, None].astype(np.float32), self.image.shape)

    def set_image_embedding(self, embedding: Embedding) -> None:
        self.image = embedding.features[0, 0].round().astype(np.uint8)

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        self.decoded += 1
        return super().predict(boxes) & (self.image > 127)


def smooth_ball(shape=(40, 64, 64), centre=(20, 32, 32), radius=(15, 20, 20)) -> np.ndarray:
    """Intensity falling off linearly with the ellipsoidal radius r, over 127 where r < 1."""
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    r = np.sqrt(sum(((grid - c) / s) ** 2 for grid, c, s in zip((zz, yy, xx), centre, radius, strict=True)))
    return np.clip(255 * (1.5 - r) / 1.0, 0, 255).round().astype(np.uint8)


def test_blended_outer_slices_are_decoded_without_an_encoder_pass() -> None:
    volume = smooth_ball()
    box = np.array([[12, 12, 5, 52, 52, 35]])  # z 5..35, middle 20; core 0.5: z 13..27
    outer = set(range(5, 13)) | set(range(28, 36))
    every, blended = EmbeddingEllipsePredictor(), EmbeddingEllipsePredictor()
    full = {z: m for z, _, m in propagate_masks(volume, box, every, core=0.5, skip=rule(4, 0.5, 0))}
    skip = rule(4, 0.5, 0, outer_step=2, blend_outer=True)
    out = {z: m for z, _, m in propagate_masks(volume, box, blended, core=0.5, skip=skip)}
    assert sorted(out) == sorted(full) == list(range(5, 36))
    assert len({z for _, z in blended.encoded} & outer) <= 9  # of 16: every 2nd, and each sweep's last
    assert blended.decoded >= len(outer)  # yet every slice beyond the core was decoded
    dices = [mask_dice(out[z][0], full[z][0]) for z in outer if full[z].sum() > 20]
    assert len(dices) >= 10 and min(dices) > 0.9


def test_blended_core_decodes_across_a_jump_without_bisecting() -> None:
    volume = np.zeros((33, 48, 48), np.uint8)
    volume[:10, 5:20, 5:20] = 200
    volume[10:, 5:30, 5:30] = 200
    box = np.array([[0, 0, 0, 47, 47, 32]])
    predictor = EmbeddingEllipsePredictor()
    out = {z: m for z, _, m in propagate_masks(volume, box, predictor, core=1.0,
                                                skip=rule(8, 0.9, 0, blend_core=True))}
    assert sorted(out) == list(range(33))
    assert {z for _, z in predictor.encoded} == {0, 7, 15, 16, 24, 32}  # the step-8 grids of both sweeps only
    assert out[5][0].sum() < out[14][0].sum()  # the jump, between grid slices 7 and 15: decoded there


def test_skip_params_refuse_a_blend_that_is_not_a_flag() -> None:
    with pytest.raises(ValueError, match="skip_blend_outer"):
        SkipParams(skip_blend_outer="yes")  # type: ignore[arg-type]


def test_triplanar_vote_on_blended_slices_keeps_the_object_with_a_third_of_the_passes() -> None:
    volume = smooth_ball()
    boxes = np.array([[12, 12, 5, 52, 52, 35]])
    full_predictor, blend_predictor = EmbeddingEllipsePredictor(), EmbeddingEllipsePredictor()
    full = segment_triplanar(volume, boxes, full_predictor, TriplanarParams(skip_step=1))
    blended = segment_triplanar(volume, boxes, blend_predictor, TriplanarParams())  # PET's shipped rule
    assert mask_dice(full == 1, blended == 1) > 0.95
    assert len(blend_predictor.encoded) <= len(full_predictor.encoded) / 3
