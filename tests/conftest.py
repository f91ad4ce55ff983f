"""Shared fixtures: exported IR (made on demand), real demo data from the stardist wheel, case writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.registry import DEFAULT_MODEL_DIR, is_available

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ir_dir() -> Path:
    """models/ir with LiteMedSAM exported (./build.sh test exports first; a bare pytest exports here)."""
    if not is_available("litemedsam", DEFAULT_MODEL_DIR):
        from models.export.build_all import build_all

        build_all(DEFAULT_MODEL_DIR, None)
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def litemedsam(ir_dir):
    """One compiled LiteMedSAM predictor for the whole session (compiling costs seconds)."""
    from models.predictor import SamPredictor
    from models.registry import get_spec

    return SamPredictor(get_spec("litemedsam"), ir_dir)


@pytest.fixture(scope="session")
def nuclei() -> tuple[np.ndarray, np.ndarray]:
    """Real fluorescence nuclei from the stardist wheel: (H, W, 3) uint8 image, (H, W) instance labels."""
    from evaluation.demo_cases import stardist_nuclei

    return stardist_nuclei()


def write_case(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def blob_volume(shape=(24, 96, 96), centre=(12, 45, 50), radii=(6, 18, 14), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid in noise: (D, H, W) uint8 volume and its (D, H, W) bool mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    mask = sum(((a - c) / r) ** 2 for a, c, r in zip((z, y, x), centre, radii, strict=True)) <= 1
    volume = np.clip(40 + 150 * mask + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)
    return volume, mask


def tight_box3d(mask: np.ndarray) -> np.ndarray:
    """(D, H, W) bool -> [x0, y0, z0, x1, y1, z1] inclusive (the demo cases' own box maker)."""
    from evaluation.demo_cases import boxes_from_labels

    return boxes_from_labels(mask.astype(np.uint8))[0]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total
