"""Make the bundled demo cases (inputs and ground truth) in the challenge format.

    python -m evaluation.demo_cases --out demo      # -> demo/inputs/*.npz, demo/gts/*.npz

* 2DBox_Microscopy_stardistDemo: the real fluorescence nuclei image and instance mask that the
  `stardist` wheel ships (stardist/data/images/img2d.tif, mask2d.tif), one box per nucleus.
* 3DBox_CT_synthDemo, 3DBox_MR_synthDemo, 3DBox_PET_synthDemo: small synthetic volumes (seeded), with
  organ-like ellipsoids (CT), a ring-enhancing lesion (MR) and two small hot spots in noise (PET).

Boxes are tight, inclusive bounding boxes of each label (2D [x0,y0,x1,y1], 3D [x0,y0,z0,x1,y1,z1]);
3D spacing is stored in SimpleITK (x, y, z) order, as in the challenge.

The cases come from sample_data/, a folder of the source checkout that the wheel does not install: this
runs from a checkout (./build.sh demo) and elsewhere stops with one line saying so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.boxes import boxes_from_labels

NO_SAMPLE_DATA = ("evaluation.demo_cases needs sample_data/, which only a source checkout has (the wheel does "
                  "not install it): run it there, e.g. ./build.sh demo")


def _save(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def make_demo_cases(out: Path, seed: int = 0) -> list[str]:
    """Write demo inputs to out/inputs and ground truth to out/gts; return the case names. Raises
    ModuleNotFoundError (NO_SAMPLE_DATA) outside a source checkout."""
    try:
        from sample_data.stardist import stardist_nuclei
        from sample_data.synthetic import synthetic_ct, synthetic_mr, synthetic_pet
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "sample_data":
            raise
        raise ModuleNotFoundError(NO_SAMPLE_DATA, name="sample_data") from error
    rng = np.random.default_rng(seed)
    names = []
    image, labels = stardist_nuclei()
    name = "2DBox_Microscopy_stardistDemo"
    boxes = boxes_from_labels(labels)
    _save(out / "inputs" / f"{name}.npz", imgs=image, boxes=boxes)
    _save(out / "gts" / f"{name}.npz", gts=labels, boxes=boxes)
    names.append(name)
    spacings = {"CT": (0.8, 0.8, 2.5), "MR": (1.0, 1.0, 1.5), "PET": (4.0, 4.0, 4.0)}
    for modality, make in (("CT", synthetic_ct), ("MR", synthetic_mr), ("PET", synthetic_pet)):
        volume, labels = make(rng)
        name = f"3DBox_{modality}_synthDemo"
        boxes = boxes_from_labels(labels)
        spacing = np.array(spacings[modality])
        _save(out / "inputs" / f"{name}.npz", imgs=volume, boxes=boxes, spacing=spacing)
        _save(out / "gts" / f"{name}.npz", gts=labels, boxes=boxes, spacing=spacing)
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo"))
    args = parser.parse_args()
    try:
        names = make_demo_cases(args.out)
    except ModuleNotFoundError as error:
        if error.name != "sample_data":
            raise
        raise SystemExit(f"error: {error}") from None
    for name in names:
        print(f"demo case {args.out / 'inputs' / name}.npz")


if __name__ == "__main__":
    main()
