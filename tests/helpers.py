"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.boxes import boxes_from_labels
from router.routing import Route
from router.strategies.interpolation import mask_dice
from router.strategies.registry import get_strategy
from sample_data.synthetic import blob_volume

dice = mask_dice  # Dice of two bool masks, 1.0 when both are empty: the runtime's own

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "blob_volume", "dice", "strategy_route", "tight_box3d", "write_case"]


def write_case(path: Path, **arrays: np.ndarray) -> Path:
    """np.savez `arrays` to `path` (parents made); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def strategy_route(strategy: str, model: str = "litemedsam") -> Route:
    """A route that runs `strategy` with its default (shipped) parameters on `model`."""
    return Route(model, strategy, get_strategy(strategy).params())


def tight_box3d(mask: np.ndarray) -> np.ndarray:
    """(D, H, W) bool -> [x0, y0, z0, x1, y1, z1] inclusive."""
    return boxes_from_labels(mask.astype(np.uint8))[0]


