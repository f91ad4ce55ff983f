"""3D strategies on synthetic volumes with the real LiteMedSAM: propagation, cache, tri-planar voting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.boxes import mask_bbox
from router.routing import RoutingTable
from router.strategies.propagate3d import PropagateParams, propagation_steps, segment_from_slice, segment_propagate3d
from router.strategies.triplanar import TriplanarParams, segment_triplanar, view_boxes
from sample_data.synthetic import cone_volume
from tests.helpers import blob_volume, dice, tight_box3d

# Prompted with the box on the middle slice only, every slice decoded: what these tests were written for.
MIDDLE_ONLY = PropagateParams(core=0.0, skip_step=1, skip_outer_step=1)  # every slice decoded
VOTE_MIDDLE_ONLY = TriplanarParams(core=0.0, skip_step=1, skip_outer_step=1)


class CountingPredictor:
    """Wraps a real predictor to count encoder runs per (view, slice) key."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.keys: list = []
        self.prompts: list[np.ndarray] = []

    def set_image(self, image, *, key=None):
        calls = self.predictor.encoder_calls
        self.predictor.set_image(image, key=key)
        if self.predictor.encoder_calls > calls:
            self.keys.append(key)

    def get_image_embedding(self):
        return self.predictor.get_image_embedding()

    def set_image_embedding(self, embedding):
        self.predictor.set_image_embedding(embedding)

    def predict(self, boxes):
        self.prompts.append(np.array(boxes, np.float64))
        return self.predictor.predict(boxes)


def two_blob_volume():
    volume_a, mask_a = blob_volume(shape=(30, 96, 96), centre=(10, 30, 30), radii=(5, 14, 12), seed=1)
    volume_b, mask_b = blob_volume(shape=(30, 96, 96), centre=(19, 62, 64), radii=(7, 16, 14), seed=2)
    return np.maximum(volume_a, volume_b), mask_a, mask_b


def test_propagation_finds_the_object_and_stays_in_z_range(litemedsam):
    volume, mask = blob_volume()
    box = tight_box3d(mask)
    litemedsam.reset()
    segs = segment_propagate3d(volume, box[None], litemedsam, MIDDLE_ONLY)
    assert dice(segs == 1, mask) > 0.85
    z0, z1 = box[2], box[5]
    assert segs[:z0].max() == 0 and segs[z1 + 1 :].max() == 0
    assert all(segs[z].any() for z in range(z0 + 1, z1))  # found on every inner slice, not just the middle


def test_core_slices_take_the_given_box_and_the_ends_propagate(litemedsam):
    volume, mask = blob_volume(shape=(24, 96, 96), centre=(12, 45, 50), radii=(8, 18, 14))
    box = tight_box3d(mask)
    given = box[[0, 1, 3, 4]].astype(np.float64)
    litemedsam.reset()
    counting = CountingPredictor(litemedsam)
    segs = segment_propagate3d(volume, box[None], counting, PropagateParams(core=0.5, skip_step=1, skip_outer_step=1))
    slices = box[5] - box[2] + 1
    assert len(counting.prompts) == slices  # one decoder call per slice, as core=0
    from_box = sum(np.array_equal(prompt[0], given) for prompt in counting.prompts)
    half = (box[5] - box[2]) / 2
    assert from_box == sum(abs(z - (box[2] + (box[5] - box[2]) // 2)) <= 0.5 * half for z in range(box[2], box[5] + 1))
    assert from_box < slices  # the outer slices follow the narrowing object
    assert dice(segs == 1, mask) > 0.85


def test_each_slice_is_encoded_once_whatever_the_boxes(litemedsam):
    volume, mask_a, mask_b = two_blob_volume()
    box_a, box_b = tight_box3d(mask_a), tight_box3d(mask_b)
    boxes = np.array([box_a, box_b, box_a + [0, 0, 0, 0, 0, 0], box_b])  # overlapping and repeated boxes
    litemedsam.reset()
    counting = CountingPredictor(litemedsam)
    segs = segment_propagate3d(volume, boxes, counting, MIDDLE_ONLY)
    covered = set(range(box_a[2], box_a[5] + 1)) | set(range(box_b[2], box_b[5] + 1))
    assert sorted(z for _, z in counting.keys) == sorted(covered)  # once each, and only covered slices
    assert len(counting.keys) < propagation_steps(boxes)  # the sweeps revisit slices; the cache absorbs it
    # a repeated box's mask is a near-copy of the first's, which keeps its voxels (router.strategies.labels)
    assert set(np.unique(segs)) == {0, 1, 2}
    assert dice(segs == 1, mask_a) > 0.8 and dice(segs == 2, mask_b) > 0.8


def test_cache_budget_is_never_exceeded(litemedsam):
    from models.predictor import EmbeddingCache

    volume, mask = blob_volume()
    cache = EmbeddingCache(budget_bytes=3 * 256 * 64 * 64 * 4)  # room for three embeddings
    litemedsam.reset()
    saved, litemedsam.cache = litemedsam.cache, cache
    try:
        peak = 0
        for z in range(8):
            litemedsam.set_image(volume[z], key=("axial", z))
            peak = max(peak, cache.used_bytes)
        assert peak <= cache.budget_bytes and len(cache) == 3
        calls = litemedsam.encoder_calls
        litemedsam.set_image(volume[7], key=("axial", 7))  # recent: cached
        assert litemedsam.encoder_calls == calls
        litemedsam.set_image(volume[0], key=("axial", 0))  # evicted: encoded again
        assert litemedsam.encoder_calls == calls + 1
    finally:
        litemedsam.cache = saved


def test_view_boxes_project_onto_each_plane():
    box = np.array([[10, 20, 3, 40, 50, 7]])  # x0 y0 z0 x1 y1 z1
    assert view_boxes(box, (0, 1, 2)).tolist() == box.tolist()
    # coronal volume (y, z, x): its x is x, its y is z, its slices are y
    assert view_boxes(box, (1, 0, 2)).tolist() == [[10, 3, 20, 40, 7, 50]]
    # sagittal volume (x, z, y): its x is y, its y is z, its slices are x
    assert view_boxes(box, (2, 0, 1)).tolist() == [[20, 3, 10, 50, 7, 40]]


@pytest.fixture(scope="module")
def pet_like():
    """A small hot blob in strong noise (a PET lesion), box with a margin."""
    volume, mask = blob_volume(shape=(28, 64, 64), centre=(14, 30, 34), radii=(4, 6, 5), seed=5)
    rng = np.random.default_rng(7)
    noisy = np.clip(volume.astype(float) + rng.normal(0, 25, volume.shape), 0, 255).astype(np.uint8)
    box = tight_box3d(mask) + np.array([-2, -2, -1, 2, 2, 1])
    return noisy, mask, box


def test_triplanar_vote_is_at_least_as_good_as_axial_and_inside_the_box(litemedsam, pet_like):
    volume, mask, box = pet_like
    litemedsam.reset()
    axial = segment_propagate3d(volume, box[None], litemedsam, MIDDLE_ONLY)
    litemedsam.reset()
    voted = segment_triplanar(volume, box[None], litemedsam, VOTE_MIDDLE_ONLY)
    assert dice(voted == 1, mask) >= dice(axial == 1, mask) - 0.02
    assert dice(voted == 1, mask) > 0.6
    inside = np.zeros(volume.shape, bool)
    inside[box[2] : box[5] + 1, box[1] : box[4] + 1, box[0] : box[3] + 1] = True
    assert voted[~inside].max() == 0


def test_shipped_slice_skipping_encodes_fewer_slices_and_keeps_the_object(litemedsam, pet_like):
    """The shipped rules (blended outer slices for propagate, blended core slices for PET's vote) against
    every slice decoded, on the real model: fewer encoder passes, about the same Dice."""
    volume, mask = blob_volume(shape=(24, 96, 96), centre=(12, 45, 50), radii=(8, 18, 14))
    box = tight_box3d(mask)[None]
    pet_volume, pet_mask, pet_box = pet_like
    cases = [(segment_propagate3d, volume, mask, box, PropagateParams(skip_step=1, skip_outer_step=1),
              PropagateParams()),
             (segment_triplanar, pet_volume, pet_mask, pet_box[None], TriplanarParams(skip_step=1), TriplanarParams())]
    for run, image, truth, boxes, every, shipped in cases:
        results = []
        for params in (every, shipped):
            litemedsam.reset()
            counting = CountingPredictor(litemedsam)
            segs = run(image, boxes, counting, params)
            results.append((len(counting.keys), dice(segs == 1, truth)))
        (every_passes, every_dice), (shipped_passes, shipped_dice) = results
        assert shipped_passes <= 0.8 * every_passes, (run.__name__, results)
        # A blended slice next to a blob's one-slice tip misses most of it (Dice 0.71 on two such slices
        # here, 0.931 against 0.984 in all); on real volumes the rule holds DSC (docs/results.md, "Slice skipping").
        assert shipped_dice >= every_dice - 0.06, (run.__name__, results)


def test_triplanar_label_order_independence(litemedsam):
    volume, mask_a, mask_b = two_blob_volume()
    boxes = np.array([tight_box3d(mask_a), tight_box3d(mask_b)])
    litemedsam.reset()
    two_views = TriplanarParams(views=("axial", "coronal"), min_votes=2.0, core=0.0, skip_step=1,
                                skip_outer_step=1)
    forward = segment_triplanar(volume, boxes, litemedsam, two_views)
    litemedsam.reset()
    backward = segment_triplanar(volume, boxes[::-1], litemedsam, two_views)
    assert np.array_equal(forward == 1, backward == 2) and np.array_equal(forward == 2, backward == 1)
    assert dice(forward == 1, mask_a) > 0.7


def test_triplanar_keeps_voxels_with_enough_votes_and_gives_contested_ones_to_the_smaller_box():
    """A small box inside a large one, both 'seen' in every view, and a third box seen only axially. Whatever
    the box order, the small box owns its region (fails with "first box wins" and with "later box wins"), the
    large box the rest of its own, and the box with one vote of two needed nothing."""

    class ScriptedPredictor:
        """Masks fill each prompt box; the box given as `axial_only` is empty except in the axial view."""

        def __init__(self, axial_only):
            self.view, self.axial_only = None, axial_only

        def set_image(self, image, *, key=None):
            self.view = key[0]

        def predict(self, boxes):
            masks = np.zeros((len(boxes), 20, 20), bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
                masks[i, y0 : y1 + 1, x0 : x1 + 1] = True
                if self.view != "axial" and np.array_equal(boxes[i], self.axial_only):
                    masks[i] = False
            return masks

    volume = np.zeros((20, 20, 20), np.uint8)
    large, small, one_view = [2, 2, 2, 15, 15, 15], [6, 6, 6, 9, 9, 9], [16, 16, 16, 18, 18, 18]
    inner = np.zeros(volume.shape, bool)
    inner[6:10, 6:10, 6:10] = True
    outer = np.zeros(volume.shape, bool)
    outer[2:16, 2:16, 2:16] = True
    for order in ([large, small, one_view], [small, large, one_view], [one_view, small, large]):
        boxes = np.array(order)
        # the axial-only box seen in 2D coordinates as its sagittal/coronal views see it is not a prompt
        # there, so the scripted predictor is told its axial box
        segs = segment_triplanar(volume, boxes, ScriptedPredictor(np.array(one_view, float)[[0, 1, 3, 4]]),
                                 VOTE_MIDDLE_ONLY)
        label = {tuple(box): i + 1 for i, box in enumerate(order)}
        assert np.array_equal(segs == label[tuple(small)], inner), order
        assert np.array_equal(segs == label[tuple(large)], outer & ~inner), order
        assert not (segs == label[tuple(one_view)]).any(), order


def test_follow_keeps_a_narrowing_structure_where_the_given_box_takes_its_neighbour(litemedsam):
    """A cone beside another bright disc, both inside the cone's 3D box (sample_data.synthetic.cone_volume): the
    shipped core prompts the narrow half with the whole box and takes the neighbour too; following the cone
    slice by slice (follow) keeps to it."""
    volume, mask = cone_volume()
    box = tight_box3d(mask)[None]
    narrow = slice(mask.shape[0] // 2, None)
    litemedsam.reset()
    core = segment_propagate3d(volume, box, litemedsam, PropagateParams(core=0.5)) == 1
    litemedsam.reset()
    follow = segment_propagate3d(volume, box, litemedsam, PropagateParams(core=0.0, follow=True)) == 1
    assert dice(core[narrow], mask[narrow]) < 0.8  # measured 0.55: the neighbour is taken
    assert dice(follow[narrow], mask[narrow]) > 0.9  # measured 0.99
    assert dice(follow, mask) > dice(core, mask) + 0.05


def test_ct_core_check_keeps_a_narrowing_structure_the_given_box_is_loose_on(litemedsam):
    """A cone in noise (sample_data.synthetic.cone_volume, no neighbour): on its narrow half the 3D box is
    loose and the core's given-box masks take noise around the cone; the shipped CT table checks those
    unsure masks against the nearest decoded slice's and keeps the steadier (core_unsure)."""
    volume, mask = cone_volume(neighbour=False)
    box = tight_box3d(mask)[None]
    narrow = slice(mask.shape[0] // 2, None)
    ct = RoutingTable.load().strategy_params("CT", "propagate")
    assert isinstance(ct, PropagateParams) and ct.core_unsure > 0
    litemedsam.reset()
    checked = segment_propagate3d(volume, box, litemedsam, ct) == 1
    litemedsam.reset()
    unchecked = segment_propagate3d(volume, box, litemedsam, replace(ct, core_unsure=0.0)) == 1
    assert dice(unchecked[narrow], mask[narrow]) < 0.7  # measured 0.63 (AMX, fp32)
    assert dice(checked[narrow], mask[narrow]) > 0.75  # measured 0.80
    assert dice(checked, mask) > dice(unchecked, mask) + 0.03  # measured 0.94 against 0.89


class ScriptedScored:
    """A ScoredBoxPredictor on 40x40 slices with a structure, a small square in the middle, on every slice. The
    given box (`given`) yields the square on the middle slice (4); on the others, where the given box is loose,
    the square and a stray corner of the box at stability `given_stability`. Any other prompt yields the square
    at stability 0.95. It records the other prompts."""

    def __init__(self, given: np.ndarray, given_stability: float) -> None:
        self.given, self.given_stability, self.others, self.z = given, given_stability, [], -1

    def set_image(self, image, *, key=None):
        self.z = key[1]

    def predict(self, boxes):
        return self.predict_scored(boxes)[0]

    def predict_scored(self, boxes):
        masks, stability = np.zeros((len(boxes), 40, 40), bool), np.full(len(boxes), 0.95)
        masks[:, 18:22, 18:22] = True
        for row, box in enumerate(np.asarray(boxes, np.float64)):
            if not np.array_equal(box, self.given):
                self.others.append(box)
            elif self.z != 4:
                x0, y0 = self.given[:2].astype(int)
                masks[row, y0 : y0 + 2, x0 : x0 + 2], stability[row] = True, self.given_stability
        return masks, stability


@pytest.mark.parametrize(("side", "given_stability", "checked"), [(30, 0.5, True), (30, 0.9, False), (8, 0.5, False)])
def test_core_check_takes_the_neighbours_mask_only_where_the_given_box_is_unsure(side, given_stability, checked):
    """A core slice is decoded again with the nearest decoded slice's mask box (grown, inside the given box)
    only where the given box's mask is unsure (stability under core_unsure) and the box is not small
    (core_unsure_size of the image's side); it then keeps the steadier mask."""
    low = 20 - side // 2
    box = np.array([[low, low, 0, low + side - 1, low + side - 1, 8]])
    given = box[0, [0, 1, 3, 4]].astype(np.float64)
    predictor = ScriptedScored(given, given_stability)
    params = PropagateParams(core=1.0, core_unsure=0.75, skip_step=1, skip_outer_step=1)
    segs = segment_propagate3d(np.zeros((9, 40, 40), np.uint8), box, predictor, params) == 1
    stray = [bool(segs[z, low, low]) for z in range(9)]
    assert segs[:, 18:22, 18:22].all() and not stray[4]
    if checked:  # every core slice but the middle one decoded again, inside the given box, without the stray
        assert len(predictor.others) == 8 and not any(stray)
        assert all(np.all(p[:2] >= given[:2]) and np.all(p[2:] <= given[2:]) for p in predictor.others)
    else:
        assert not predictor.others and sum(stray) == 8


def test_one_2d_box_follows_the_structure_until_it_ends(litemedsam):
    """segment_from_slice: a box on one slice of an ellipsoid returns it on the slices it spans, ending within
    two slices of its true ends, and nothing on the other slices (the shipped one_box_step looks 4 ahead)."""
    for seed, (shape, centre, radii) in enumerate([((32, 96, 96), (15, 45, 50), (9, 20, 16)),
                                                   ((40, 96, 96), (22, 50, 44), (12, 16, 22))]):
        volume, mask = blob_volume(shape, centre, radii, seed=seed)
        z = centre[0]
        litemedsam.reset()
        got = segment_from_slice(volume, mask_bbox(mask[z]), z, litemedsam)
        truth_slices, found = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(got.any(axis=(1, 2)))
        assert abs(int(found[0]) - int(truth_slices[0])) <= 2 and abs(int(found[-1]) - int(truth_slices[-1])) <= 2
        assert np.all(np.diff(found) == 1)  # one run of slices
        assert dice(got, mask) > 0.9


class SliceRecorder:
    """A ScoredBoxPredictor that records the (view, slice) keys it is asked to encode, then asks a real one."""

    def __init__(self, predictor) -> None:
        self.predictor, self.keys = predictor, set()

    def set_image(self, image, *, key=None):
        self.keys.add(key)
        self.predictor.set_image(image, key=key)

    def predict_scored(self, boxes):
        return self.predictor.predict_scored(boxes)


def test_one_2d_box_looking_ahead_skips_slices_where_the_structure_changes_slowly(litemedsam):
    """On a long ellipsoid, looking 4 slices ahead leaves most slices unencoded (their masks interpolated
    between sure, agreeing ones) and gives the object one slice at a time gives; one at a time encodes every
    slice of the object and the one past each end, and ends where the structure does."""
    volume, mask = blob_volume((46, 96, 96), (23, 46, 50), (16, 18, 22), seed=1)
    z, box = 23, mask_bbox(mask[23])
    litemedsam.reset()
    objects, encoded = {}, {}
    for step in (1, 4):  # the cache keeps the slices: each is encoded once
        recorder = SliceRecorder(litemedsam)
        objects[step] = segment_from_slice(volume, box, z, recorder, PropagateParams(one_box_step=step))
        encoded[step] = len(recorder.keys)
    found, truth_slices = np.flatnonzero(objects[1].any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(1, 2)))
    assert abs(int(found[0]) - int(truth_slices[0])) <= 2 and abs(int(found[-1]) - int(truth_slices[-1])) <= 2
    assert encoded[1] == len(found) + 2  # every slice of the object and the one past each end
    assert encoded[4] < 0.7 * encoded[1]  # measured 21 of 33
    assert dice(objects[4], objects[1]) > 0.95 and dice(objects[4], mask) > 0.9


class SliceLog:
    """A ScoredBoxPredictor that records the slices it decodes, then asks a real one."""

    def __init__(self, predictor) -> None:
        self.predictor, self.decoded, self.z = predictor, [], -1

    def set_image(self, image, *, key=None):
        self.z = key[1]
        self.predictor.set_image(image, key=key)

    def predict_scored(self, boxes):
        self.decoded.append(self.z)
        return self.predictor.predict_scored(boxes)


def test_one_2d_box_sweeps_down_on_a_second_predictor_to_the_same_object(litemedsam):
    """With `down` (here a second session on the same compiled model: its own infer requests and cache), the
    sweep towards slice 0 runs on it in a thread and the other on the first: each decodes only its side of
    the box's slice, and the object is the one a single predictor gives."""
    from models.predictor import SamPredictor

    volume, mask = blob_volume((20, 64, 64), (9, 30, 32), (6, 14, 11), seed=0)
    box = mask_bbox(mask[9])
    litemedsam.reset()
    alone = segment_from_slice(volume, box, 9, litemedsam)
    up, down = SliceLog(litemedsam), SliceLog(SamPredictor(litemedsam.model))
    together = segment_from_slice(volume, box, 9, up, down=down)
    assert np.array_equal(together, alone) and dice(together, mask) > 0.8
    assert up.decoded[0] == 9 and min(up.decoded) == 9 and down.decoded and max(down.decoded) < 9
