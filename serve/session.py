"""One viewer's session: its volume, the target buffer the client mirrors, the boxes not yet run, and undo.

The target buffer holds the one object being segmented (nnInteractive's model: the viewer copies it into
its label layer when the user moves on to the next object). Its values are 0 and 1, except where an
initial segmentation put others; a box only writes 1 where it adds and 0 where it removes:

- a positive box adds its object (serve.engine: the 3D object the box yields) to the current one;
- a negative box (include_interaction=false) removes its object from the current one: what a user
  draws it around is taken to be what should not be there;
- an initial segmentation replaces the buffer and is then edited by later boxes like any result;
- undo restores the buffer as it was before the last change (several levels, within UNDO_BYTES).

Each answer is a Change: whether a prediction (or undo) ran, and the bounding box of the voxels it
changed (half-open, array axes), whose contents the response sends (serve.app).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from serve.boxes import BoxPrompt, parse_box
from serve.protocol import ProtocolError

Region = list[list[int]]  # [[low, high), ...] per axis
UNDO_STEPS = 32  # undo levels kept
UNDO_BYTES = 256 << 20  # and at most this much of saved buffer regions (the oldest go first)


class VolumeHandle(Protocol):
    """What an engine keeps of one session's volume (its embeddings, views); closed when the session ends."""

    def close(self) -> None: ...


class BoxEngine(Protocol):
    """What a session needs of the segmentation engine (serve.engine.ModelEngine; tests use a fake)."""

    def open_volume(self, volume: np.ndarray, modality: str) -> VolumeHandle:
        """A (D, H, W) uint8 volume -> the handle later boxes on it are segmented through."""

    def object_of(self, handle: VolumeHandle, box: BoxPrompt) -> np.ndarray:
        """The (D, H, W) bool object a box yields: a 2D box's object across the slices it continues on,
        a 3D box's inside the box."""


@dataclass(frozen=True)
class Change:
    """What an interaction did: `ran` (a prediction or undo ran) and the region it changed (None: none)."""

    ran: bool
    region: Region | None = None


def changed_region(before: np.ndarray, after: np.ndarray, origin: Sequence[int]) -> Region | None:
    """The bounding box (half-open, offset by `origin`) of the voxels where two equal-shaped arrays differ."""
    return nonzero_region(before != after, origin)


def nonzero_region(mask: np.ndarray, origin: Sequence[int] = (0, 0, 0)) -> Region | None:
    """The bounding box (half-open, offset by `origin`) of a bool array's true voxels; None when there are none."""
    region = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(other for other in range(mask.ndim) if other != axis)))
        if hits.size == 0:
            return None
        region.append([int(hits[0]) + origin[axis], int(hits[-1]) + 1 + origin[axis]])
    return region


def _slicer(region: Region) -> tuple[slice, ...]:
    return tuple(slice(low, high) for low, high in region)


@dataclass
class _Saved:
    """A buffer region as it was before a change (what undo writes back)."""

    region: Region
    values: np.ndarray


class Session:
    """One client's state. Not thread-safe by itself: the lease's lock serialises a session's requests.

    engine: segments boxes; modality: the routing table's modality for this session's volumes (the
    image_properties of set_image may name another).
    """

    def __init__(self, engine: BoxEngine, modality: str = "CT") -> None:
        self.engine, self.default_modality = engine, modality
        self.image_shape: tuple[int, ...] | None = None  # as uploaded: (C, D, H, W)
        self.handle: VolumeHandle | None = None
        self.target: np.ndarray | None = None
        self.pending: list[tuple[BoxPrompt, bool]] = []
        self.undo_log: list[_Saved] = []
        self.do_autozoom = False
        self.closed = threading.Event()

    # ---- image and buffer ------------------------------------------------------------------------------

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        if self.image_shape is None:
            raise ProtocolError(400, "no image: call set_image first")
        _, depth, height, width = self.image_shape
        return depth, height, width

    def set_image(self, shape: Sequence[int], volume: np.ndarray, properties: dict[str, Any]) -> list[int]:
        """Make `volume` ((D, H, W) uint8, made from the uploaded image of (C, D, H, W) `shape`) the session's;
        the target buffer, boxes and undo of the previous image go. Returns the uploaded shape."""
        self.drop_image()
        modality = properties.get("modality") if isinstance(properties.get("modality"), str) else None
        self.handle = self.engine.open_volume(volume, modality or self.default_modality)
        self.image_shape = tuple(int(side) for side in shape)
        return list(self.image_shape)

    def set_target_buffer(self, shape: Any, dtype_name: Any) -> None:
        """A zeroed buffer of the client's `shape` (the image's spatial shape) and integer or bool dtype."""
        if not isinstance(shape, list) or len(shape) != 3 or not all(
                isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in shape):
            raise ProtocolError(400, f"target buffer shape must be three positive integers, got {str(shape)[:60]}")
        try:
            dtype = np.dtype(str(dtype_name))
        except TypeError:
            raise ProtocolError(400, f"invalid target buffer dtype {str(dtype_name)[:40]!r}") from None
        if dtype.kind not in "biu" or dtype.itemsize > 8:
            raise ProtocolError(400, f"target buffer dtype must be bool or an integer type, got {dtype}")
        if tuple(shape) != self.spatial_shape:
            raise ProtocolError(400, f"target buffer shape {shape} does not match the image's "
                                     f"{list(self.spatial_shape)}")
        self.target = np.zeros(tuple(shape), dtype)
        self.pending.clear()
        self.undo_log.clear()

    def _buffer(self) -> np.ndarray:
        if self.target is None:
            raise ProtocolError(400, "no target buffer: call set_target_buffer after set_image")
        return self.target

    # ---- interactions ----------------------------------------------------------------------------------

    def add_box(self, coords: Any, include: bool, run: bool) -> Change:
        """A box (nnInteractive's bbox_coords), positive or negative; run now or queued for predict."""
        self._buffer()
        self.pending.append((parse_box(coords, self.spatial_shape), include))
        return self.predict() if run else Change(False)

    def predict(self) -> Change:
        """Run the queued boxes, in order, as one undo step; Change(False) when none were queued."""
        if not self.pending:
            return Change(False)
        target, handle = self._buffer(), self.handle
        assert handle is not None  # a target buffer exists only with an image
        queued, self.pending = self.pending, []  # a box that fails is not tried again by the next predict
        objects = [(self.engine.object_of(handle, box), include) for box, include in queued]
        regions = [region for mask, _ in objects if (region := nonzero_region(mask)) is not None]
        if not regions:
            return Change(True)
        union = [[min(r[axis][0] for r in regions), max(r[axis][1] for r in regions)] for axis in range(3)]
        window = _slicer(union)
        before = target[window].copy()
        for mask, include in objects:
            inside, current = mask[window], target[window]
            if include:
                current[inside & (current == 0)] = 1
            else:
                current[inside] = 0
        local = changed_region(before, target[window], [low for low, _ in union])
        if local is None:
            return Change(True)
        offset = [[low - union[axis][0], high - union[axis][0]] for axis, (low, high) in enumerate(local)]
        self._save(local, before[_slicer(offset)])
        return Change(True, local)

    def add_initial_seg(self, seg: np.ndarray) -> Change:
        """Replace the buffer with an initial segmentation of the image's shape (the client already mirrored
        it, so nothing is sent back); queued boxes are dropped, as nnInteractive resets interactions here."""
        target = self._buffer()
        if seg.shape != target.shape:
            raise ProtocolError(400, f"initial segmentation shape {list(seg.shape)} does not match the image's "
                                     f"{list(target.shape)}")
        if seg.dtype.kind not in "biu":
            raise ProtocolError(400, f"initial segmentation dtype must be bool or an integer type, got {seg.dtype}")
        self.pending.clear()
        self._save([[0, side] for side in target.shape], target.copy())
        target[...] = seg.astype(target.dtype, copy=False)
        return Change(False)

    def undo(self) -> Change:
        """Restore the buffer as before the last change: Change(True, its region); Change(False) if none."""
        if not self.undo_log:
            return Change(False)
        saved = self.undo_log.pop()
        target = self._buffer()
        window = _slicer(saved.region)
        region = changed_region(target[window], saved.values, [low for low, _ in saved.region])
        target[window] = saved.values
        return Change(True, region)

    def reset(self) -> None:
        """Zero the buffer and forget queued boxes and undo (the client zeroes its copy itself)."""
        if self.target is not None:
            self.target.fill(0)
        self.pending.clear()
        self.undo_log.clear()

    def _save(self, region: Region, values: np.ndarray) -> None:
        self.undo_log.append(_Saved(region, values))
        while len(self.undo_log) > UNDO_STEPS or (
                len(self.undo_log) > 1 and sum(s.values.nbytes for s in self.undo_log) > UNDO_BYTES):
            self.undo_log.pop(0)

    # ---- end -------------------------------------------------------------------------------------------

    def drop_image(self) -> None:
        """Forget the image, its embeddings, the target buffer, queued boxes and undo."""
        if self.handle is not None:
            self.handle.close()
        self.handle, self.image_shape, self.target = None, None, None
        self.pending.clear()
        self.undo_log.clear()

    def close(self) -> None:
        """Free the volume, its embeddings and the buffer (the lease is gone)."""
        self.closed.set()
        self.drop_image()
