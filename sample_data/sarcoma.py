"""Real CT, MR T1 and FDG-PET slices of soft-tissue sarcomas with their manual tumour masks, shipped in
`sample_data/sarcoma_slices.npz` for INT8 calibration and accuracy control.

Source: the IBSI's crops (github theibsi/data_sets, ibsi_validation) of TCIA's "Soft-tissue Sarcoma"
collection, patients STS_007 to STS_014 only (Vallieres M, Freeman CR, Skamene SR, El Naqa I. A radiomics
model from joint FDG-PET and MRI texture features for the prediction of lung metastases in soft-tissue
sarcomas of the extremities. Phys Med Biol 2015;60(14):5471-96. Licence CC BY 3.0). Patients 15 to 21 are
never shipped: they are the held-out cases INT8 is validated on. Intensities are those of the challenge
format (CT window L40/W400; MR and PET clipped to the 0.5/99.5 percentiles of non-zero voxels).

    python -m sample_data.sarcoma ../shared/data/dev-sts    # rebuild the .npz (maintainers only)
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.boxes import boxes_from_labels

SLICES_FILE = Path(__file__).with_name("sarcoma_slices.npz")
PATIENTS = range(7, 15)  # 15..21 are the INT8 validation cases: never shipped
AXIAL_FRACTIONS = (0.2, 0.4, 0.6, 0.8)  # where in the tumour's z range the axial slices are taken
_CASE = re.compile(r"3DBox_(CT|MR|PET)_IBSISTS(\d{3})(T1)?\.npz$")


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


def slices_of_volume(image: np.ndarray, mask: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(D, H, W) uint8 volume and bool mask -> [(view, (h, w) image, (h, w) mask, (4,) volume box)]: axial
    slices at AXIAL_FRACTIONS of the mask's z range, then one coronal (z, x) and one sagittal (z, y) slice
    through its centroid. The volume box is the mask's 3D box [x_min, y_min, x_max, y_max] in that slice's
    (column, row) frame: (x, y) axial, (x, z) coronal, (y, z) sagittal."""
    x_low, y_low, z_low, x_high, y_high, z_high = (int(v) for v in boxes_from_labels(mask.astype(np.uint8))[0])
    picked = sorted({int(round(z_low + f * (z_high - z_low))) for f in AXIAL_FRACTIONS})
    axial_box = np.array([x_low, y_low, x_high, y_high])
    out = [("axial", image[z], mask[z], axial_box) for z in picked if mask[z].any()]
    _, y_indices, x_indices = np.nonzero(mask)
    y_mid, x_mid = int(np.median(y_indices)), int(np.median(x_indices))
    out.append(("coronal", image[:, y_mid], mask[:, y_mid], np.array([x_low, z_low, x_high, z_high])))
    out.append(("sagittal", image[:, :, x_mid], mask[:, :, x_mid], np.array([y_low, z_low, y_high, z_high])))
    return [(view, np.ascontiguousarray(i), np.ascontiguousarray(m), b) for view, i, m, b in out if m.any()]


def build(dev_sts: Path, out_file: Path = SLICES_FILE) -> int:
    """Write the slices of patients PATIENTS from a dev-sts folder (imgs/ and gts/) to `out_file`; returns the count."""
    arrays: dict[str, np.ndarray] = {}
    rows: list[tuple[str, int, str]] = []
    for case in sorted((dev_sts / "imgs").glob("*.npz")):
        match = _CASE.match(case.name)
        if not match or int(match.group(2)) not in PATIENTS:
            continue
        with np.load(case) as data, np.load(dev_sts / "gts" / case.name) as truth:
            volume, labels = data["imgs"], truth["gts"]
        for view, image, mask, volume_box in slices_of_volume(volume, labels == 1):
            index = len(rows)
            arrays[f"image_{index:03d}"], arrays[f"mask_{index:03d}"] = image, mask
            arrays[f"box_{index:03d}"] = volume_box.astype(np.int32)
            rows.append((match.group(1), int(match.group(2)), view))
    arrays["modality"] = np.array([r[0] for r in rows])
    arrays["patient"] = np.array([r[1] for r in rows])
    arrays["view"] = np.array([r[2] for r in rows])
    np.savez_compressed(out_file, **arrays)
    return len(rows)


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


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild sample_data/sarcoma_slices.npz from a dev-sts folder.")
    parser.add_argument("dev_sts", type=Path)
    args = parser.parse_args()
    print(f"wrote {build(args.dev_sts)} slices to {SLICES_FILE}")


if __name__ == "__main__":
    main()
