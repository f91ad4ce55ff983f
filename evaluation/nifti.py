"""NIfTI export of the 3D cases of a :mod:`evaluation.compute_metrics` run (its ``--save-nii`` option).

For viewing in ITK-SNAP or 3D Slicer. SimpleITK is imported inside :func:`save_nifti`, so importing this
module does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evaluation.compute_metrics import _load_optional


def save_nifti(rows: Sequence[dict], segs_dir: Path, gts_dir: Path, out_dir: Path,
               images_dir: Path | None = None) -> list[Path]:
    """Write ``<case>_gt.nii.gz``, ``<case>_seg.nii.gz`` and (with ``images_dir``) ``<case>_img.nii.gz``
    for every 3D case, for ITK-SNAP / 3D Slicer.

    Axis and spacing order: the ``.npz`` arrays (``gts``, ``segs``, ``imgs``) are ``(z, y, x)``;
    ``sitk.GetImageFromArray`` turns them into images of size ``(x, y, z)``. The GT file's ``spacing``
    is stored in SimpleITK order ``(x, y, z)`` (what ``GetSpacing`` returns) and is written as is with
    ``SetSpacing``, so the NIfTI files are ``(x, y, z)`` in both size and spacing. Without a stored
    spacing the images keep SimpleITK's default of 1 mm. 2D cases, volumes that are missing or whose
    shape differs from the GT's are skipped.

    Args:
        rows: scored rows; only ``case`` is used.
        segs_dir: folder of predictions (key ``segs``).
        gts_dir: folder of ground truth (keys ``gts``, ``spacing``).
        out_dir: folder to write (created if needed).
        images_dir: folder of the input ``.npz`` (key ``imgs``), for the ``_img`` files.

    Returns:
        The written paths.
    """
    import SimpleITK as sitk

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in rows:
        gt, spacing = (_load_optional(gts_dir / r["case"], k) for k in ("gts", "spacing"))
        if gt is None or gt.ndim != 3:
            continue
        volumes = {"gt": gt, "seg": _load_optional(segs_dir / r["case"], "segs")}
        if images_dir is not None:
            volumes["img"] = _load_optional(images_dir / r["case"], "imgs")
        for kind, vol in volumes.items():
            if vol is None or vol.shape != gt.shape:
                continue
            image = sitk.GetImageFromArray(vol)  # (z, y, x) array -> image of size (x, y, z)
            if spacing is not None:
                image.SetSpacing([float(s) for s in spacing])  # stored (x, y, z), as GetSpacing
            written.append(out_dir / f"{Path(r['case']).stem}_{kind}.nii.gz")
            sitk.WriteImage(image, str(written[-1]), useCompression=True)
    return written
