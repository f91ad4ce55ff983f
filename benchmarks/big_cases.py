"""Synthetic big cases written as challenge .npz files: a (100, 512, 512) CT volume (peak memory) and a
2048x2048 microscopy image with ~300 boxes (many decodes on one embedding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.boxes import boxes_from_labels
from sample_data.synthetic import big_ct_volume, big_disc_image

BIG_VOLUME_NAME = "3DBox_CT_bigvolume"
BIG_IMAGE_NAME = "2DBox_Microscopy_bigimage"
BIG_VOLUME_RSS_TARGET_MIB = 2048


def make_big_volume(out_dir: Path, seed: int = 0) -> Path:
    """Write a (100, 512, 512) uint8 CT-like volume with 6 ellipsoid organs and their tight boxes (no GT)."""
    volume, labels = big_ct_volume(seed)
    path = out_dir / f"{BIG_VOLUME_NAME}.npz"
    np.savez(path, imgs=volume, boxes=boxes_from_labels(labels), spacing=np.array([0.8, 0.8, 2.5]))
    return path


def make_big_image(out_dir: Path, seed: int = 0, size: int = 2048, objects: int = 300) -> tuple[Path, Path]:
    """Write a (size, size, 3) uint8 microscopy-like image with `objects` textured discs: (case, ground truth).

    Every disc that stays visible gets its tight box; labels follow box order, and later discs cover
    earlier ones (big_disc_image).
    """
    image, labels = big_disc_image(seed, size, objects)
    (out_dir / "big_gts").mkdir(exist_ok=True)
    case, gt = out_dir / f"{BIG_IMAGE_NAME}.npz", out_dir / "big_gts" / f"{BIG_IMAGE_NAME}.npz"
    boxes = boxes_from_labels(labels)
    np.savez(case, imgs=image, boxes=boxes)
    np.savez(gt, gts=labels, boxes=boxes)
    return case, gt
