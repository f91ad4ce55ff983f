"""Make the bundled demo cases (inputs and ground truth) in the challenge format.

    python -m evaluation.demo_cases --out demo      # -> demo/inputs/*.npz, demo/gts/*.npz

* 2DBox_Microscopy_stardistDemo: the real fluorescence nuclei image and instance mask that the
  `stardist` wheel ships (stardist/data/images/img2d.tif, mask2d.tif), one box per nucleus.
* 3DBox_CT_synthDemo, 3DBox_MR_synthDemo, 3DBox_PET_synthDemo: small synthetic volumes (seeded), with
  organ-like ellipsoids (CT), a ring-enhancing lesion (MR) and two small hot spots in noise (PET).

Boxes are tight, inclusive bounding boxes of each label (2D [x0,y0,x1,y1], 3D [x0,y0,z0,x1,y1,z1]);
3D spacing is stored in SimpleITK (x, y, z) order, as in the challenge.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

import cv2
import numpy as np


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) or (D, H, W) label map with labels 1..N -> (N, 4) or (N, 6) tight inclusive boxes."""
    boxes = []
    for label in range(1, int(labels.max()) + 1):
        where = np.argwhere(labels == label)
        low, high = where.min(axis=0), where.max(axis=0)
        # array axes are (y, x) or (z, y, x); boxes are x first
        boxes.append(np.concatenate([low[::-1], high[::-1]]))
    width = 2 * labels.ndim
    return np.array(boxes, np.int64).reshape(-1, width)


def stardist_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The stardist wheel's 2D fluorescence image as (H, W, 3) uint8 and its instance labels (H, W)."""
    import tifffile

    dist = importlib.metadata.distribution("stardist")  # located, not imported: its TF deps are not needed
    image = tifffile.imread(dist.locate_file("stardist/data/images/img2d.tif")).astype(np.float64)
    mask = tifffile.imread(dist.locate_file("stardist/data/images/mask2d.tif"))
    image = np.rint((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)
    # relabel 1..N in order of appearance, dropping gaps
    _, labels = np.unique(mask, return_inverse=True)
    return np.repeat(image[:, :, None], 3, axis=2), labels.reshape(mask.shape).astype(np.uint16)


def _ellipsoid(shape: tuple[int, int, int], centre, radii) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1


def _finish(volume: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    volume = volume + rng.normal(0, noise, volume.shape)
    volume = np.stack([cv2.GaussianBlur(s, (0, 0), 1.0) for s in volume.astype(np.float32)])
    return np.clip(np.rint(volume), 0, 255).astype(np.uint8)


def synthetic_ct(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (40, 160, 160)
    volume = np.full(shape, 10.0)
    labels = np.zeros(shape, np.uint8)
    volume[_ellipsoid(shape, (20, 80, 80), (40, 70, 75))] = 100  # body
    organs = [((20, 70, 55), (12, 35, 28), 170), ((22, 95, 115), (8, 16, 12), 210), ((18, 60, 110), (6, 12, 14), 140)]
    for label, (centre, radii, value) in enumerate(organs, start=1):
        inside = _ellipsoid(shape, centre, radii)
        volume[inside] = value
        labels[inside] = label
    return _finish(volume, rng, 8.0), labels


def synthetic_mr(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (36, 144, 144)
    volume = np.zeros(shape)
    volume[_ellipsoid(shape, (18, 72, 72), (30, 64, 56))] = 90  # head
    lesion = _ellipsoid(shape, (17, 60, 85), (7, 18, 15))
    volume[lesion] = 200
    volume[_ellipsoid(shape, (17, 60, 85), (4, 11, 9))] = 120  # necrotic core, still lesion
    return _finish(volume, rng, 6.0), lesion.astype(np.uint8)


def synthetic_pet(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (32, 96, 96)
    volume = np.full(shape, 15.0)
    volume[_ellipsoid(shape, (16, 48, 48), (30, 44, 40))] = 40  # body uptake
    labels = np.zeros(shape, np.uint8)
    for label, (centre, radii, value) in enumerate([((12, 40, 35), (4, 6, 6), 220), ((20, 60, 62), (3, 4, 5), 170)], start=1):
        inside = _ellipsoid(shape, centre, radii)
        volume[inside] = value
        labels[inside] = label
    return _finish(volume, rng, 10.0), labels


def _save(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def make_demo_cases(out: Path, seed: int = 0) -> list[str]:
    """Write demo inputs to out/inputs and ground truth to out/gts; return the case names."""
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
    for name in make_demo_cases(args.out):
        print(f"demo case {args.out / 'inputs' / name}.npz")


if __name__ == "__main__":
    main()
