"""From per-box masks to one label map (router.strategies.labels): masks kept inside their boxes, contested
voxels given by a rule that does not depend on box order, and the strategies that use it."""

from __future__ import annotations

import numpy as np
import pytest

from router.strategies.image2d import Image2dParams, segment_image2d
from router.strategies.labels import BoxMasks, MaskParams, box_masks_bytes
from router.strategies.propagate3d import PropagateParams, box_regions_3d, segment_propagate3d

EVERY_SLICE = dict(core=1.0, skip_step=1, skip_outer_step=1)


class BoxFillingPredictor:
    """A scripted predictor whose mask is each prompt's box filled (a model that segments its box whole)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def set_image(self, image, *, key=None):
        pass

    def predict(self, boxes):
        masks = np.zeros((len(boxes), *self.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes).astype(int), strict=True):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return masks

    def predict_scored(self, boxes):
        return self.predict(boxes), np.ones(len(boxes))


def test_a_later_larger_wrong_mask_no_longer_covers_an_earlier_object():
    """A kidney (box 1) and, after it, a vessel tree's box (box 2) spanning the scan whose mask is a wrong
    blob filling the box: painted in box order the kidney vanishes; by the smaller box it is whole."""
    volume = np.zeros((12, 40, 40), np.uint8)
    kidney = np.array([10, 12, 3, 17, 20, 8])  # [x0, y0, z0, x1, y1, z1]
    vessel_tree = np.array([2, 2, 0, 37, 37, 11])
    boxes = np.array([kidney, vessel_tree])
    kidney_voxels = np.zeros(volume.shape, bool)
    kidney_voxels[3:9, 12:21, 10:18] = True
    predictor = BoxFillingPredictor((40, 40))
    by_order = segment_propagate3d(volume, boxes, predictor, PropagateParams(overlap="later_box", **EVERY_SLICE))
    assert not (by_order == 1).any()  # what the baseline's painting does
    segs = segment_propagate3d(volume, boxes, predictor, PropagateParams(**EVERY_SLICE))
    assert np.array_equal(segs == 1, kidney_voxels)
    assert (segs == 2).sum() == 36 * 36 * 12 - kidney_voxels.sum()
    swapped = segment_propagate3d(volume, boxes[::-1], predictor, PropagateParams(**EVERY_SLICE))
    assert np.array_equal(swapped == 2, segs == 1) and np.array_equal(swapped == 1, segs == 2)  # order-free


def test_masks_are_clipped_to_their_3d_boxes():
    class Spilling(BoxFillingPredictor):
        def predict(self, boxes):
            masks = super().predict(boxes)
            masks[:, :, :5] = True  # a strip outside every box
            return masks

    volume = np.zeros((6, 30, 30), np.uint8)
    box = np.array([[10, 10, 1, 20, 20, 4]])
    segs = segment_propagate3d(volume, box, Spilling((30, 30)), PropagateParams(**EVERY_SLICE))
    assert (segs[1:5, 10:21, 10:21] == 1).all() and (segs == 1).sum() == 4 * 11 * 11
    loose = segment_propagate3d(volume, box, Spilling((30, 30)), PropagateParams(clip_to_box=False, **EVERY_SLICE))
    assert (loose[1:5, :, :5] == 1).all()  # off: the strip stays, on the box's slices only


def test_a_near_copy_of_a_larger_mask_does_not_take_it():
    """Two near-coincident boxes (a necrotic core and the enhancing tumour around it) whose masks are one
    blob: the slightly smaller box does not take the larger's mask whole; a lesion well inside does."""
    shape = (30, 30)
    organ, lesion, near_copy = [2, 2, 25, 25], [8, 8, 12, 12], [3, 3, 25, 25]
    image = np.zeros((*shape, 3), np.uint8)
    for order in ([organ, lesion], [lesion, organ]):
        segs = segment_image2d(image, np.array(order, float), BoxFillingPredictor(shape), Image2dParams())
        label = {tuple(box): i + 1 for i, box in enumerate(order)}
        assert (segs[8:13, 8:13] == label[tuple(lesion)]).all() and (segs == label[tuple(organ)]).sum() == 24 * 24 - 25
    for order in ([organ, near_copy], [near_copy, organ]):
        segs = segment_image2d(image, np.array(order, float), BoxFillingPredictor(shape), Image2dParams())
        label = {tuple(box): i + 1 for i, box in enumerate(order)}
        assert (segs == label[tuple(organ)]).sum() == 24 * 24  # the near-copy would take all of it: kept
        assert not (segs == label[tuple(near_copy)]).any()
        loose = segment_image2d(image, np.array(order, float), BoxFillingPredictor(shape),
                                Image2dParams(overlap_max_take=1.0))
        assert (loose == label[tuple(near_copy)]).sum() == 23 * 23  # no guard: the smaller box takes it


def test_a_clearly_smaller_box_takes_a_larger_box_s_wrong_blob():
    """The myocardium's box holds the left ventricle's; the myocardium's mask is a wrong blob lying inside the
    ventricle's box. The ventricle's box (a third of the area) wins the blob though it takes all of it."""

    class BlobPredictor(BoxFillingPredictor):
        def predict(self, boxes):
            masks = super().predict(boxes)
            masks[np.all(np.asarray(boxes) == myocardium, axis=1)] = masks[np.all(np.asarray(boxes) == ventricle,
                                                                                  axis=1)].any(axis=0)
            return masks

    myocardium, ventricle = [2, 2, 27, 27], [8, 8, 22, 22]  # 26^2 and 15^2 px: ratio 0.33
    image = np.zeros((30, 30, 3), np.uint8)
    for order in ([myocardium, ventricle], [ventricle, myocardium]):
        segs = segment_image2d(image, np.array(order, float), BlobPredictor((30, 30)), Image2dParams())
        label = {tuple(box): i + 1 for i, box in enumerate(order)}
        assert (segs[8:23, 8:23] == label[tuple(ventricle)]).all() and (segs == label[tuple(ventricle)]).sum() == 225
        assert not (segs == label[tuple(myocardium)]).any()  # its whole blob is the ventricle's


def test_box_masks_put_places_windows_and_slices_inside_each_box():
    lows, highs = box_regions_3d(np.array([[2, 1, 0, 5, 3, 1]]))  # x 2..5, y 1..3, z 0..1
    masks = BoxMasks((3, 6, 8), lows, highs)
    assert masks.crops[0].shape == (2, 3, 4)
    assert sum(crop.nbytes for crop in masks.crops) <= box_masks_bytes((3, 6, 8), lows, highs, True, 1)  # the guard's
    window = np.ones((2, 2, 3), bool)
    masks.put(0, window, origin=(1, 2, 4))  # half outside the box in y and x, z 1..2 of which 1 is in
    segs = masks.label_map(np.uint8)
    assert np.argwhere(segs).tolist() == [[1, 2, 4], [1, 2, 5], [1, 3, 4], [1, 3, 5]]
    masks.put_slice(0, 1, np.zeros((6, 8), bool))  # a later mask of a slice replaces it
    assert not masks.label_map(np.uint8).any()


@pytest.mark.parametrize("bad", [dict(overlap="largest"), dict(overlap_max_take=1.5), dict(overlap_same_box=-0.1),
                                 dict(clip_to_box="yes")])
def test_mask_params_refuse_what_they_cannot_run_with(bad):
    with pytest.raises(ValueError):
        MaskParams(**bad)
    with pytest.raises(ValueError):
        PropagateParams(**bad)
