"""The shipped sarcoma slices (sample_data/sarcoma.py) and how they are cut from a volume
(models/export/sarcoma_slices.py)."""

from __future__ import annotations

import numpy as np

from models.boxes import mask_bbox
from models.export.sarcoma_slices import AXIAL_FRACTIONS, slices_of_volume
from sample_data.sarcoma import PATIENTS, sarcoma_slices
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
        # the volume's box, seen in this view, holds the slice's own mask and fits in the slice
        tight = mask_bbox(s.mask)
        assert tight is not None and (s.volume_box[:2] <= tight[:2]).all() and (s.volume_box[2:] >= tight[2:]).all()
        assert (s.volume_box >= 0).all() and s.volume_box[2] < s.image.shape[1] and s.volume_box[3] < s.image.shape[0]


def test_slices_of_volume_cut_through_the_object() -> None:
    mask = ellipsoid((40, 50, 60), centre=(20, 18, 40), radii=(10, 8, 12))
    volume = np.where(mask, 200, 30).astype(np.uint8)
    cut = slices_of_volume(volume, mask)
    views = [view for view, _, _, _ in cut]
    assert views == ["axial"] * len(AXIAL_FRACTIONS) + ["coronal", "sagittal"]
    for _, image, piece, _ in cut:
        assert piece.any() and np.array_equal(image == 200, piece)
    assert cut[-2][1].shape == (40, 60) and cut[-1][1].shape == (40, 50)  # coronal (z, x), sagittal (z, y)
    # the coronal and sagittal cuts go through the centre, where the object is widest
    assert cut[-2][2].sum() == max(mask[:, y].sum() for y in range(50))
    # the volume box is the object's 3D extent in each view's (column, row) frame, and wider than an end slice
    z, y, x = (np.flatnonzero(mask.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1)))
    assert [list(b) for _, _, _, b in cut[:1] + cut[-2:]] == [
        [x[0], y[0], x[-1], y[-1]],
        [x[0], z[0], x[-1], z[-1]],
        [y[0], z[0], y[-1], z[-1]],
    ]
    first_axial = mask_bbox(cut[0][2])
    assert first_axial is not None and first_axial[2] - first_axial[0] < cut[0][3][2] - cut[0][3][0]
