"""Real CT, MR T1 and FDG-PET slices of soft-tissue sarcomas with their manual tumour masks, shipped in
`sample_data/sarcoma_slices.npz` for INT8 calibration and accuracy control.

Source: the IBSI's crops (github theibsi/data_sets, ibsi_validation) of TCIA's "Soft-tissue Sarcoma"
collection, patients STS_007 to STS_014 only (Vallieres M, Freeman CR, Skamene SR, El Naqa I. A radiomics
model from joint FDG-PET and MRI texture features for the prediction of lung metastases in soft-tissue
sarcomas of the extremities. Phys Med Biol 2015;60(14):5471-96. Licence CC BY 3.0). Patients 15 to 21 are
never shipped: they are the held-out cases INT8 is validated on. Intensities are those of the challenge
format (CT window L40/W400; MR and PET clipped to the 0.5/99.5 percentiles of non-zero voxels).

    python -m models.export.sarcoma_slices ../shared/data/dev-sts    # rebuild the .npz (maintainers only)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SLICES_FILE = Path(__file__).with_name("sarcoma_slices.npz")
PATIENTS = range(7, 15)  # 15..21 are the INT8 validation cases: never shipped


@dataclass(frozen=True)
class SarcomaSlice:
    """One 2D slice: `image` (H, W) uint8, `mask` (H, W) bool (the tumour), `volume_box` (4,) int
    [x_min, y_min, x_max, y_max] in the slice's frame (the tumour's 3D box seen in this view: the prompt a
    3D case gives the slice), and where it came from."""

    image: np.ndarray
    mask: np.ndarray
    volume_box: np.ndarray
    modality: str  # CT, MR or PET
    patient: int
    view: str  # axial, coronal or sagittal


def sarcoma_slices(path: Path = SLICES_FILE) -> list[SarcomaSlice]:
    """The shipped slices, in file order (by case name, then view)."""
    with np.load(path) as data:
        return [
            SarcomaSlice(
                data[f"image_{i:03d}"],
                data[f"mask_{i:03d}"].astype(bool),
                data[f"box_{i:03d}"].astype(np.int64),
                str(modality),
                int(patient),
                str(view),
            )
            for i, (modality, patient, view) in enumerate(
                zip(data["modality"], data["patient"], data["view"], strict=True)
            )
        ]
