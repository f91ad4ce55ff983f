"""Rebuild sample_data/sarcoma_slices.npz (the INT8 calibration and control slices) from a dev-sts folder:
the CT, MR T1 and FDG-PET volumes of the sarcoma patients sample_data.sarcoma.PATIENTS, cut into axial,
coronal and sagittal slices with their tumour masks and the tumour's 3D box in each slice's view. Maintainers
only (the source volumes are not shipped); it sits here, with the export that uses the slices, because it
needs the box geometry of models.boxes while sample_data imports nothing of the project.

    python -m models.export.sarcoma_slices ../shared/data/dev-sts
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from models.boxes import boxes_from_labels
from sample_data.sarcoma import PATIENTS, SLICES_FILE

AXIAL_FRACTIONS = (0.2, 0.4, 0.6, 0.8)  # where in the tumour's z range the axial slices are taken
_CASE = re.compile(r"3DBox_(CT|MR|PET)_IBSISTS(\d{3})(T1)?\.npz$")


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


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild sample_data/sarcoma_slices.npz from a dev-sts folder.")
    parser.add_argument("dev_sts", type=Path)
    args = parser.parse_args()
    print(f"wrote {build(args.dev_sts)} slices to {SLICES_FILE}")


if __name__ == "__main__":
    main()
