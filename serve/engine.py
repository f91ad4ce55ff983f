"""A box on a session's volume -> the 3D object, on seg-predict's routing table, models and memory guard.

- A 3D box (extent > 1 on every axis) runs the route's 3D strategy (router/routes.toml: propagation for
  CT and MR, the tri-planar vote for PET) on the volume, axes read as (z, y, x), and keeps its label 1.
- A 2D box (extent 1 on one axis: the slice it was drawn on, in any view) runs
  `router.strategies.propagate3d.segment_from_slice` on the volume turned so that axis comes first: the
  box prompts its slice and the object is followed both ways until it ends. Where that function is not
  there (an older router), only the box's slice is decoded.

Every session has its own embedding cache (keyed by view axis and slice), so a session's slices are
encoded once whatever the other sessions do. Right after set_image a background thread fills it with the
volume's axial slices, nearest the middle first (where a user draws first), as far as the cache's
budget and the memory left allow; it pauses while any box is being segmented, so an interaction encodes
what it needs before anything else, waiting at most for the one slice being encoded. The compiled model
is shared: encoder and decoder calls of all sessions are serialised by one lock each (an OpenVINO infer
request runs one inference at a time), and a session's predictor holds its own current embedding, so
sessions interleave call by call, never mid-call. A 2D box's two sweeps (up and down from its slice) run at
once where the model has two threads or more, each on a stream of a second compile of the decoder with half
the threads (DecoderSeat, models.compiled.with_decoder_streams): two one-thread streams decode more boxes a
second than one two-thread stream (docs/results.md, "Interactive server latency").
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from models.compiled import with_decoder_streams
from models.pool import ModelPool
from models.predictor import DEFAULT_CACHE_BYTES, Embedding, EmbeddingCache, SamPredictor
from router.casefile import ArrayHeader
from router.memory import MISC_BYTES, available_bytes, gib
from router.modality import parse_case_name
from router.pipeline import Memory, guarded_decode_batch
from router.routing import Route, RoutingTable
from router.strategies.propagate3d import PropagateParams, segment_from_slice
from router.strategies.registry import get_strategy
from router.validation import CaseError
from serve.boxes import BoxPrompt, plane_box, volume_box
from serve.intensity import peak_bytes
from serve.protocol import ProtocolError

log = logging.getLogger("seg.serve")

AXIAL = "axial"  # the view name propagate3d keys a volume's slices by
# Background encoding stops where less than this would be left: the boxes' own work needs the room.
BACKGROUND_RESERVE_BYTES = 512 << 20


def canonical_modality(name: str) -> str:
    """A modality as a user names it ("ct", "MRI", "pet") -> the routing table's name (router.modality);
    an unknown one comes back as "Unknown:<name>" and takes the table's default route."""
    return parse_case_name(f"3DBox_{name}_serve.npz")[1]


@dataclass(frozen=True)
class ModelLocks:
    """One lock for the shared encoder's infer request, one for the decoder's."""

    encode: threading.Lock = field(default_factory=threading.Lock)
    decode: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class DecoderSeat:
    """A predictor to decode on (its own infer request) and the lock it is used under: the shared model's with
    ModelLocks.decode, or one of the two streams of a sweep pair (ModelEngine.sweep_seats)."""

    predictor: SamPredictor
    lock: threading.Lock


class Foreground:
    """How many boxes are being segmented now, across sessions: background encoding waits for none."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self._idle:
            self._count += 1
        try:
            yield
        finally:
            with self._idle:
                self._count -= 1
                self._idle.notify_all()

    def wait_idle(self, stop: threading.Event) -> None:
        """Return once no box is being segmented (or `stop` is set)."""
        with self._idle:
            while self._count and not stop.is_set():
                self._idle.wait(0.5)


class LockedCache(EmbeddingCache):
    """An EmbeddingCache a session's requests and its background encoder share (one lock per call)."""

    def __init__(self, budget_bytes: int) -> None:
        super().__init__(budget_bytes)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Embedding | None:
        with self._lock:
            return super().get(key)

    def put(self, key: Hashable, item: Embedding) -> None:
        with self._lock:
            super().put(key, item)

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items


def middle_out(depth: int) -> list[int]:
    """Slice indices 0..depth-1, nearest the middle first: middle, middle+1, middle-1, middle+2, ..."""
    middle = (depth - 1) // 2
    return sorted(range(depth), key=lambda z: (abs(z - middle), z < middle))


class SessionPredictor:
    """A session's view of the shared SamPredictor (router.strategies' EmbeddingPredictor and
    ScoredBoxPredictor): embeddings from the session's cache under `namespace`, its own current embedding,
    `batch` boxes per decoder call (None: the predictor's); it encodes on `predictor` and decodes on `seat`
    (None: on `predictor` too, under the shared decoder lock)."""

    def __init__(self, predictor: SamPredictor, cache: EmbeddingCache, namespace: Hashable, locks: ModelLocks,
                 batch: int | None = None, seat: DecoderSeat | None = None) -> None:
        self.predictor, self.cache, self.namespace, self.locks, self.batch = predictor, cache, namespace, locks, batch
        self.seat = seat or DecoderSeat(predictor, locks.decode)
        self._current: Embedding | None = None

    def seated(self, seat: DecoderSeat) -> SessionPredictor:
        """The same session's predictor (cache, batch, encoder) decoding on `seat`, with its own current embedding."""
        return SessionPredictor(self.predictor, self.cache, self.namespace, self.locks, self.batch, seat)

    def embedding(self, image: np.ndarray, key: Hashable | None) -> Embedding:
        """The embedding of `image` ((H, W) or (H, W, 3) uint8): from the cache under `key`, else encoded now
        (and cached under `key`; None: not cached)."""
        full_key = (self.namespace, key)
        found = self.cache.get(full_key) if key is not None else None
        if found is None:
            with self.locks.encode:
                found = self.predictor.encode(image)
            if key is not None:
                self.cache.put(full_key, found)
        return found

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> None:
        self._current = self.embedding(image, key)

    def get_image_embedding(self) -> Embedding:
        if self._current is None:
            raise RuntimeError("call set_image() before get_image_embedding()")
        return self._current

    def set_image_embedding(self, embedding: Embedding) -> None:
        self._current = embedding

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) [x0, y0, x1, y1] boxes -> (N, H, W) bool masks on the current embedding."""
        return self._decode(boxes, scored=False)[0]

    def predict_scored(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes -> ((N, H, W) bool masks, (N,) stability scores)."""
        return self._decode(boxes, scored=True)

    def _decode(self, boxes: np.ndarray, scored: bool) -> tuple[np.ndarray, np.ndarray]:
        embedding, decoder = self.get_image_embedding(), self.seat.predictor
        with self.seat.lock:
            decoder.set_image_embedding(embedding)
            if scored:
                return decoder.predict_scored(boxes, batch=self.batch)
            return decoder.predict(boxes, batch=self.batch), np.zeros(len(boxes))


class EngineVolume:
    """A session's volume as the engine keeps it: (D, H, W) uint8, its route, the one-box rule's parameters
    (the table's propagate ones for its modality), its embedding cache and its turned copies (a 2D box drawn
    in another view is segmented on the volume with that axis first)."""

    def __init__(self, volume: np.ndarray, route: Route, one_box: PropagateParams, cache_bytes: int) -> None:
        self.volume, self.route, self.one_box = volume, route, one_box
        self.cache = LockedCache(cache_bytes)
        self._turned: tuple[int, np.ndarray] | None = None  # one at a time: each is a copy of the volume
        self.stopped = threading.Event()
        self.encoder: threading.Thread | None = None

    def encode_in_background(self, predictor: SessionPredictor, foreground: Foreground, memory: Memory | None) -> None:
        """Start filling the cache with the axial slices' embeddings, nearest the middle first (a thread)."""
        self.encoder = threading.Thread(target=self._encode_slices, args=(predictor, foreground, memory),
                                        name="seg-serve-encoder", daemon=True)
        self.encoder.start()

    def _encode_slices(self, predictor: SessionPredictor, foreground: Foreground, memory: Memory | None) -> None:
        started = time.monotonic()
        room_for: int | None = None  # embeddings the cache holds, known after the first
        depth = self.volume.shape[0]
        for count, z in enumerate(middle_out(depth)):
            foreground.wait_idle(self.stopped)
            if self.stopped.is_set():
                return
            if room_for is not None and count >= room_for:
                log.info("background encoding stopped after %d of %d slices in %.1f s: the session's cache "
                         "holds no more", count, depth, time.monotonic() - started)
                return
            room = None if memory is None else memory()
            if room is not None and room < BACKGROUND_RESERVE_BYTES:
                log.info("background encoding stopped after %d slices: %s of memory left", count, gib(room))
                return
            try:
                embedding = predictor.embedding(self.volume[z], (AXIAL, z))
            except Exception:  # the volume's boxes still work, encoding what they need themselves
                log.exception("background encoding failed")
                return
            room_for = room_for or max(1, self.cache.budget_bytes // embedding.features.nbytes)
        # benchmarks.serve_latency waits for this line: every axial slice is in the cache from here on
        log.info("background encoding done: %d slices in %.1f s", depth, time.monotonic() - started)

    def view(self, axis: int) -> np.ndarray:
        """The volume with `axis` first and the other two in their order, C-contiguous."""
        if axis == 0:
            return self.volume
        if self._turned is None or self._turned[0] != axis:
            self._turned = None  # the old copy goes before the new one is made
            self._turned = (axis, np.ascontiguousarray(np.moveaxis(self.volume, axis, 0)))
        return self._turned[1]

    def close(self) -> None:
        self.stopped.set()
        self.cache.clear()
        self._turned = None


class ModelEngine:
    """serve.session.BoxEngine on the product's models: `table` routes a session's modality to a model and
    3D strategy, `pool` holds the compiled models (one per model, shared by every session), `memory` is
    the memory guard's room (None: no guard), `cache_bytes` each session's embedding budget."""

    def __init__(self, table: RoutingTable, pool: ModelPool, memory: Memory | None = available_bytes,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, background: bool = True) -> None:
        self.table, self.pool, self.memory, self.cache_bytes = table, pool, memory, cache_bytes
        self.background = background
        self.locks = ModelLocks()
        self.foreground = Foreground()
        self._compiling = threading.Lock()  # ModelPool compiles on first use, from one thread at a time
        self._sweep_seats: dict[str, tuple[DecoderSeat, DecoderSeat] | None] = {}

    def route(self, modality: str) -> Route:
        return self.table.route(3, canonical_modality(modality), self.pool.available)

    def warm(self, modality: str) -> str:
        """Compile the model `modality` routes to, and its sweep seats (sweep_seats), now rather than on the first
        box; its route, described."""
        route = self.route(modality)
        self.sweep_seats(route)
        return route.describe()

    def _model(self, route: Route) -> SamPredictor:
        with self._compiling:
            return self.pool.get(route.model)

    def sweep_seats(self, route: Route) -> tuple[DecoderSeat, DecoderSeat] | None:
        """Two seats on one compile of the route's decoder with two streams, each with half the model's threads,
        for a 2D box's two sweeps at once; None where the model runs on one thread or was built in memory (no IR
        folder to compile from). Compiled on first use."""
        model = self._model(route)
        with self._compiling:
            if route.model not in self._sweep_seats:
                seats = None
                threads = int(model.model.decoder.get_property("INFERENCE_NUM_THREADS"))
                if threads >= 2 and model.model.directory is not None:
                    streams = with_decoder_streams(model.model, 2)
                    seats = (DecoderSeat(SamPredictor(streams, 0), threading.Lock()),
                             DecoderSeat(SamPredictor(streams, 0), threading.Lock()))
                self._sweep_seats[route.model] = seats
            return self._sweep_seats[route.model]

    def check_image(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """The memory guard for set_image, before the frame is decompressed: the array of `shape` and
        `dtype`, its conversion to uint8 and a margin must fit in the room left; ProtocolError 507 if not."""
        if self.memory is None:
            return
        raw = int(np.prod(shape, dtype=object)) * dtype.itemsize
        need = raw + peak_bytes(tuple(shape[1:]), dtype) + MISC_BYTES
        room = self.memory()
        if room is not None and need > room:
            raise ProtocolError(507, f"image needs {gib(need)} of memory, {gib(room)} available")

    def open_volume(self, volume: np.ndarray, modality: str) -> EngineVolume:
        """The session's EngineVolume of a (D, H, W) uint8 volume; its axial slices start encoding now."""
        one_box = cast(PropagateParams, self.table.strategy_params(canonical_modality(modality), "propagate"))
        opened = EngineVolume(volume, self.route(modality), one_box, self.cache_bytes)
        if self.background:
            predictor = SessionPredictor(self._model(opened.route), opened.cache, 0, self.locks)
            opened.encode_in_background(predictor, self.foreground, self.memory)
        return opened

    def object_of(self, handle: Any, box: BoxPrompt) -> np.ndarray:
        """The (D, H, W) bool object of `box` on the session's volume (serve.session.BoxEngine)."""
        with self.foreground.active():  # background encoding pauses meanwhile
            return self._object_of(handle, box)

    def _object_of(self, volume: EngineVolume, box: BoxPrompt) -> np.ndarray:
        route = volume.route
        axis = box.slice_axis(volume.volume.shape)
        if axis is None:
            boxes = volume_box(box)[None]
            predictor = self._predictor(volume, route, 0, boxes, volume.volume.shape)
            labels = get_strategy(route.strategy).run(volume.volume, boxes, predictor, route.params)
            return np.asarray(labels == 1)
        turned = volume.view(axis)
        z = box.lows[axis]
        plane = plane_box(box, axis)
        # the memory guard sees the widest the object may grow: the box on every slice of the view
        reach = np.array([[plane[0], plane[1], 0, plane[2], plane[3], turned.shape[0] - 1]])
        predictor = self._predictor(volume, route, axis, reach, turned.shape)
        seats = self.sweep_seats(route)
        if seats is None:
            mask = segment_from_slice(turned, plane, z, predictor, volume.one_box)
        else:
            mask = segment_from_slice(turned, plane, z, predictor.seated(seats[0]), volume.one_box,
                                      down=predictor.seated(seats[1]))
        return np.moveaxis(np.asarray(mask, bool), 0, axis)

    def _predictor(self, volume: EngineVolume, route: Route, axis: int, boxes: np.ndarray,
                   shape: tuple[int, ...]) -> SessionPredictor:
        """The session's predictor on the route's model for the view of `axis`, with the decoder batch the
        memory guard allows for `boxes` on a volume of `shape` (ProtocolError 507 when none fits)."""
        model = self._model(route)
        batch = None
        if self.memory is not None:
            try:
                headers = {"imgs": ArrayHeader(tuple(shape), np.dtype(np.uint8))}
                batch = guarded_decode_batch(3, headers, boxes, route, model, self.memory, "box")
            except CaseError as error:
                raise ProtocolError(507, str(error)) from None
        return SessionPredictor(model, volume.cache, axis, self.locks, batch)
