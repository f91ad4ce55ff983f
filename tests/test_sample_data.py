"""The shipped sarcoma slices (sample_data/sarcoma.py) and how they are cut from a volume."""

from __future__ import annotations

import numpy as np

from sample_data.sarcoma import AXIAL_FRACTIONS, PATIENTS, sarcoma_slices, slices_of_volume
from sample_data.synthetic import ellipsoid


def test_shipped_slices_are_real_masked_and_from_the_calibration_patients_only() -> None:
    slices = sarcoma_slices()
    assert len(slices) >= 100
    # patients 15-21 validate INT8: not one of their slices may be shipped
    assert {s.patient for s in slices} <= set(PATIENTS) and max(PATIENTS) < 15
    assert {s.modality for s in slices} == {"CT", "MR", "PET"}
    assert {s.view for s in slices} == {"axial", "coronal", "sagittal"}
    for s in slices:
        assert s.image.dtype == np.uint8 and s.image.ndim == 2 and s.mask.shape == s.image.shape
        assert s.mask.dtype == bool and 0 < s.mask.sum() < s.mask.size
        assert s.image.std() > 0  # a real picture, not a blank


def test_slices_of_volume_cut_through_the_object() -> None:
    mask = ellipsoid((40, 50, 60), centre=(20, 18, 40), radii=(10, 8, 12))
    volume = np.where(mask, 200, 30).astype(np.uint8)
    cut = slices_of_volume(volume, mask)
    views = [view for view, _, _ in cut]
    assert views == ["axial"] * len(AXIAL_FRACTIONS) + ["coronal", "sagittal"]
    for _, image, piece in cut:
        assert piece.any() and np.array_equal(image == 200, piece)
    assert cut[-2][1].shape == (40, 60) and cut[-1][1].shape == (40, 50)  # coronal (z, x), sagittal (z, y)
    # the coronal and sagittal cuts go through the centre, where the object is widest
    assert cut[-2][2].sum() == max(mask[:, y].sum() for y in range(50))
