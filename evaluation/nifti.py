"""NIfTI export of the 3D cases of a :mod:`evaluation.compute_metrics` run (its ``--save-nii`` option).

For viewing in ITK-SNAP or 3D Slicer. SimpleITK is imported only when a file is written
(:mod:`convert.io`), so importing this module does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convert.io import Geometry, write_image
from evaluation.common import load_optional


def save_nifti(rows: Sequence[dict], segs_dir: Path, gts_dir: Path, out_dir: Path,
               images_dir: Path | None = None) -> list[Path]:
    """Write ``<case>_gt.nii.gz``, ``<case>_seg.nii.gz`` and (with ``images_dir``) ``<case>_img.nii.gz``
    for every 3D case, for ITK-SNAP / 3D Slicer.

    Axis and spacing order: the ``.npz`` arrays (``gts``, ``segs``, ``imgs``) are ``(z, y, x)``;
    written with :func:`convert.io.write_image`, they become images of size ``(x, y, z)``. The GT file's
    ``spacing`` is stored in SimpleITK order ``(x, y, z)`` (what ``GetSpacing`` returns) and is written
    as is, so the NIfTI files are ``(x, y, z)`` in both size and spacing; origin 0, identity direction
    (a case does not keep its scan's; ``seg-convert to-image`` restores them for cases it made).
    Without a stored spacing the images get 1 mm. 2D cases, volumes that are missing or whose shape
    differs from the GT's are skipped.

    Args:
        rows: scored rows; only ``case`` is used.
        segs_dir: folder of predictions (key ``segs``).
        gts_dir: folder of ground truth (keys ``gts``, ``spacing``).
        out_dir: folder to write (created if needed).
        images_dir: folder of the input ``.npz`` (key ``imgs``), for the ``_img`` files.

    Returns:
        The written paths.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in rows:
        gt, spacing = (load_optional(gts_dir / r["case"], k) for k in ("gts", "spacing"))
        if gt is None or gt.ndim != 3:
            continue
        volumes = {"gt": gt, "seg": load_optional(segs_dir / r["case"], "segs")}
        if images_dir is not None:
            volumes["img"] = load_optional(images_dir / r["case"], "imgs")
        for kind, vol in volumes.items():
            if vol is None or vol.shape != gt.shape:
                continue
            written.append(out_dir / f"{Path(r['case']).stem}_{kind}.nii.gz")
            write_image(vol, Geometry.plain(vol.shape, spacing), written[-1])  # spacing stored (x, y, z)
    return written
