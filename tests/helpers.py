"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import io
import socket
import zipfile
from pathlib import Path

import numpy as np

from models.boxes import boxes_from_labels
from router.routing import Route
from router.strategies.interpolation import mask_dice
from router.strategies.registry import get_strategy
from sample_data.synthetic import blob_volume

dice = mask_dice  # Dice of two bool masks, 1.0 when both are empty: the runtime's own

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "blob_volume", "dice", "forged_npz", "free_port", "strategy_route", "tight_box3d", "write_case"]


def write_case(path: Path, **arrays: np.ndarray) -> Path:
    """np.savez `arrays` to `path` (parents made); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def forged_npz(path: Path, shape: tuple[int, ...], dtype: str = "|u1") -> Path:
    """An npz whose `imgs` header declares `shape` but holds 1 KiB of data: what a reader sees before
    decompressing a bomb (np.load would only find out after allocating the array)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    boxes = io.BytesIO()
    np.save(boxes, np.array([[1, 1, 1, 4, 4, 4]]))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("imgs.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(1024))
        archive.writestr("boxes.npy", boxes.getvalue())
    return path


def strategy_route(strategy: str, model: str = "litemedsam") -> Route:
    """A route that runs `strategy` with its default (shipped) parameters on `model`."""
    return Route(model, strategy, get_strategy(strategy).params())


def tight_box3d(mask: np.ndarray) -> np.ndarray:
    """(D, H, W) bool -> [x0, y0, z0, x1, y1, z1] inclusive."""
    return boxes_from_labels(mask.astype(np.uint8))[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
