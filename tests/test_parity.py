"""OpenVINO pipeline vs the PyTorch LiteMedSAM (same weights, the challenge's procedure) on a real image."""

from __future__ import annotations

import numpy as np
import pytest

from models.boxes import boxes_from_labels
from router.strategies.image2d import Image2dParams, segment_image2d
from tests.helpers import dice


@pytest.fixture(scope="module")
def torch_baseline():
    from benchmarks.baseline_torch import TorchBaseline

    return TorchBaseline(threads=2)


def test_per_box_parity_on_real_nuclei(nuclei, litemedsam, torch_baseline):
    image, labels = nuclei
    boxes = boxes_from_labels(labels)
    assert len(boxes) > 100
    height, width = image.shape[:2]

    litemedsam.set_image(image)
    ov_masks = litemedsam.predict(boxes)

    from benchmarks.baseline_torch import _box_to_256

    embedding, new_hw = torch_baseline.embed(image)
    scores = []
    for box, ov_mask in zip(boxes, ov_masks, strict=True):
        torch_mask = torch_baseline.decode(embedding, _box_to_256(box, (height, width)), new_hw, (height, width)) > 0
        scores.append(dice(ov_mask, torch_mask))
    scores = np.array(scores)
    assert scores.min() >= 0.98, f"worst boxes: {np.argsort(scores)[:5]}, DSC {np.sort(scores)[:5]}"
    # and the masks are real segmentations, not empty agreement: most nuclei are found
    found = [dice(mask, labels == i + 1) for i, mask in enumerate(ov_masks)]
    assert np.median(found) > 0.7


def test_label_map_matches_torch_baseline(nuclei, litemedsam, torch_baseline):
    image, labels = nuclei
    boxes = boxes_from_labels(labels)[:40]
    ours = segment_image2d(image, boxes, litemedsam, Image2dParams(zoom_below=0.0, clip_to_box=False))  # the baseline's
    theirs = torch_baseline.segment_2d(image, boxes)
    assert ours.dtype == theirs.dtype == np.uint8
    agreement = np.mean(ours == theirs)
    assert agreement > 0.995
