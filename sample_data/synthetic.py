"""Seeded synthetic volumes and images with their ground truth (no files read).

Volumes are (D, H, W) = (z, y, x) uint8; label maps have the same shape, 0 = background. Only the demo's
volumes (synthetic_ct, _mr, _pet) are blurred with OpenCV, imported there: the rest is numpy alone, and
so are the unit tests built on it (tests/helpers.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ellipsoid(shape: tuple[int, int, int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """(D, H, W) bool: the voxels inside the axis-aligned ellipsoid; centre and radii in (z, y, x) voxels."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    distance = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2
    return distance <= 1


def blob_volume(
    shape: tuple[int, int, int] = (24, 96, 96),
    centre: Sequence[float] = (12, 45, 50),
    radii: Sequence[float] = (6, 18, 14),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid in noise: (D, H, W) uint8 volume and its (D, H, W) bool mask."""
    rng = np.random.default_rng(seed)
    mask = ellipsoid(shape, centre, radii)
    volume = np.clip(40 + 150 * mask + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)
    return volume, mask


def cone_volume(shape: tuple[int, int, int] = (24, 112, 112), seed: int = 0,
                neighbour: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A bright cone along z in noise, wide (radius 26) at z = 0 and narrow (4) at the top, with (`neighbour`)
    another bright disc beside its narrow half, inside the cone's 3D box but not touching it: a structure whose
    cross-section changes along z next to a neighbour, as a liver's does. (D, H, W) uint8 volume, (D, H, W)
    bool cone mask."""
    depth, height, width = shape
    z, y, x = np.ogrid[:depth, :height, :width]
    radius = 26 - 22 * z / (depth - 1)
    centre_y, centre_x = height // 2, width * 5 // 14
    distance = np.sqrt((y - centre_y) ** 2 + (x - centre_x) ** 2)
    mask = np.broadcast_to(distance <= radius, shape)
    disc = ((y - centre_y) ** 2 + (x - width // 2) ** 2 <= 10**2) & (z >= depth // 2) & (distance > radius + 4)
    rng = np.random.default_rng(seed)
    volume = 40 + 150 * mask + 150 * (disc & neighbour) + rng.normal(0, 10, shape)
    return np.clip(volume, 0, 255).astype(np.uint8), mask.copy()


def _finish(volume: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Add Gaussian noise, blur each slice (sigma 1 px) and round to uint8."""
    import cv2  # a build-time dependency (requirements-build.txt), like the demo cases made from this

    volume = volume + rng.normal(0, noise, volume.shape)
    volume = np.stack([cv2.GaussianBlur(s, (0, 0), 1.0) for s in volume.astype(np.float32)])
    return np.clip(np.rint(volume), 0, 255).astype(np.uint8)


def synthetic_ct(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(40, 160, 160) CT-like body with three organ ellipsoids (labels 1..3)."""
    shape = (40, 160, 160)
    volume = np.full(shape, 10.0)
    labels = np.zeros(shape, np.uint8)
    volume[ellipsoid(shape, (20, 80, 80), (40, 70, 75))] = 100  # body
    organs = [((20, 70, 55), (12, 35, 28), 170), ((22, 95, 115), (8, 16, 12), 210), ((18, 60, 110), (6, 12, 14), 140)]
    for label, (centre, radii, value) in enumerate(organs, start=1):
        inside = ellipsoid(shape, centre, radii)
        volume[inside] = value
        labels[inside] = label
    return _finish(volume, rng, 8.0), labels


def synthetic_mr(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(36, 144, 144) MR-like head with one ring-enhancing lesion (label 1, necrotic core included)."""
    shape = (36, 144, 144)
    volume = np.zeros(shape)
    volume[ellipsoid(shape, (18, 72, 72), (30, 64, 56))] = 90  # head
    lesion = ellipsoid(shape, (17, 60, 85), (7, 18, 15))
    volume[lesion] = 200
    volume[ellipsoid(shape, (17, 60, 85), (4, 11, 9))] = 120  # necrotic core, still lesion
    return _finish(volume, rng, 6.0), lesion.astype(np.uint8)


def synthetic_pet(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(32, 96, 96) PET-like body uptake with two small hot spots (labels 1, 2)."""
    shape = (32, 96, 96)
    volume = np.full(shape, 15.0)
    volume[ellipsoid(shape, (16, 48, 48), (30, 44, 40))] = 40  # body uptake
    labels = np.zeros(shape, np.uint8)
    hot_spots = [((12, 40, 35), (4, 6, 6), 220), ((20, 60, 62), (3, 4, 5), 170)]
    for label, (centre, radii, value) in enumerate(hot_spots, start=1):
        inside = ellipsoid(shape, centre, radii)
        volume[inside] = value
        labels[inside] = label
    return _finish(volume, rng, 10.0), labels


def big_ct_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (100, 512, 512) uint8 CT-like volume with 6 ellipsoid organs and its label map (1..6)."""
    rng = np.random.default_rng(seed)
    shape = (100, 512, 512)
    volume = np.full(shape, 10, np.uint8)
    volume[ellipsoid(shape, (50, 256, 256), (90, 220, 240))] = 90  # body
    labels = np.zeros(shape, np.uint8)
    organs = [((45, 230, 170), (18, 70, 55)), ((50, 300, 350), (12, 40, 35)), ((40, 180, 330), (10, 35, 40)),
              ((60, 330, 200), (14, 30, 30)), ((30, 260, 260), (8, 20, 20)), ((70, 200, 250), (10, 25, 45))]
    for label, (centre, radii) in enumerate(organs, start=1):
        inside = ellipsoid(shape, centre, radii)
        volume[inside] = 120 + 20 * label
        labels[inside] = label
    volume = np.clip(volume.astype(np.int16) + rng.integers(-8, 9, shape, dtype=np.int16), 0, 255).astype(np.uint8)
    return volume, labels


def big_disc_image(seed: int = 0, size: int = 2048, objects: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, 3) uint8 microscopy-like image of textured discs and its (size, size) uint16 labels.

    Later discs cover earlier ones (the ground truth's own order, like a slide's); discs covered
    completely are dropped and the rest relabelled 1..K in order.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(10, 40, (size, size), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint16)
    y, x = np.ogrid[:size, :size]
    for label in range(1, objects + 1):
        cy, cx = rng.integers(40, size - 40, 2)
        radius = int(rng.integers(8, 30))
        window = (slice(cy - radius, cy + radius + 1), slice(cx - radius, cx + radius + 1))
        disc = (y[window[0]] - cy) ** 2 + (x[:, window[1]] - cx) ** 2 <= radius**2
        image[window][disc] = rng.integers(120, 230)
        labels[window][disc] = label
    kept = np.unique(labels[labels > 0])
    relabel = np.zeros(objects + 1, np.uint16)
    relabel[kept] = np.arange(1, kept.size + 1)
    return np.repeat(image[:, :, None], 3, axis=2), relabel[labels]
