"""Real microscopy images from the `stardist` wheel (BSD-3), located on disk, never imported.

stardist's own code needs TensorFlow; only its bundled data files are read here.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np


def stardist_file(name: str) -> Path:
    """Path of `stardist/data/images/<name>` in the installed wheel (img2d.tif, mask2d.tif, img3d.tif, histo.jpg)."""
    return Path(importlib.metadata.distribution("stardist").locate_file(f"stardist/data/images/{name}"))


def scale_to_uint8(image: np.ndarray, low_pct: float = 0.0, high_pct: float = 100.0) -> np.ndarray:
    """Any-dtype image -> uint8 by a percentile window; 0/100 is a plain min-max, as the challenge's grey images.

    Shape is kept. A constant image becomes all zeros.
    """
    pixels = image.astype(np.float64)
    low, high = np.percentile(pixels, [low_pct, high_pct])
    scaled = (np.clip(pixels, low, high) - low) / max(high - low, 1e-8)
    return np.rint(scaled * 255).astype(np.uint8)


def stardist_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The wheel's 2D fluorescence image as (H, W, 3) uint8 and its instance labels (H, W) uint16, 1..N."""
    import tifffile

    image = scale_to_uint8(tifffile.imread(stardist_file("img2d.tif")))
    mask = tifffile.imread(stardist_file("mask2d.tif"))
    _, labels = np.unique(mask, return_inverse=True)  # relabel 1..N in order, dropping gaps
    return np.repeat(image[:, :, None], 3, axis=2), labels.reshape(mask.shape).astype(np.uint16)
