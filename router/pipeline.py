"""One case end to end: read -> route -> strategy -> predictor -> segs (-> written).

`Segmenter` is the one path every runner takes (predict.py, the benchmark, a cluster worker) and what a
library user calls on an image in memory (`Segmenter.segment`); the runners keep only their loop, their
messages and their exit status.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pool import ModelPool
from models.predictor import DEFAULT_CACHE_BYTES, Embedding, SamPredictor
from router.casefile import (
    ArrayHeader,
    Case,
    CaseError,
    CaseFile,
    case_kind,
    open_case,
    output_is_complete,
    read_headers,
    segs_shape,
    write_segs,
)
from router.memory import Warmth, available_bytes, estimate_case, fitting_decode_batch, gib
from router.routing import Route, RoutingTable
from router.strategies import OnSlice
from router.strategies.registry import get_strategy
from router.validation import validate_case

# progress(case, route, slices) -> a context manager giving the per-slice callback (slices: 0 for 2D)
Progress = Callable[[Case, Route, int], AbstractContextManager[OnSlice]]
# on_route(case, route) is called once the case is read and routed, before any model runs
OnRoute = Callable[[Case, Route], None]
# memory() -> bytes this process may still allocate, None when unknown (router.memory.available_bytes)
Memory = Callable[[], int | None]
BOXES_MAX_BYTES = 65535 * 6 * 8  # the most boxes a case may hold, as float64: larger is not read for the guard

log = logging.getLogger("seg")


@dataclass(frozen=True)
class CaseResult:
    """What one case produced: the case as read, its route and precision, the label map and the seconds
    from reading the case to its label map, written when an output was given."""

    case: Case
    route: Route
    precision: str
    segs: np.ndarray
    seconds: float


@dataclass(frozen=True)
class BatchedPredictor:
    """The route's predictor as one case's strategy sees it (router.strategies.ScoredBoxPredictor and
    EmbeddingPredictor): `predict` decodes `batch` boxes per call (None: the predictor's own), the batch the
    memory guard chose for this case, so the shared predictor is never reconfigured."""

    predictor: SamPredictor
    batch: int | None = None

    def set_image(self, image: np.ndarray, *, key: Hashable | None = None) -> None:
        self.predictor.set_image(image, key=key)

    def get_image_embedding(self) -> Embedding:
        return self.predictor.get_image_embedding()

    def set_image_embedding(self, embedding: Embedding) -> None:
        self.predictor.set_image_embedding(embedding)

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        return self.predictor.predict(boxes, batch=self.batch)

    def predict_scored(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predictor.predict_scored(boxes, batch=self.batch)


def segment_case(
    case: Case, route: Route, predictor: SamPredictor, on_slice: OnSlice | None = None, decode_batch: int | None = None
) -> np.ndarray:
    """Run `route` on `case` with `predictor` (the route's model) and return the label map of the case's
    spatial shape; `decode_batch`: boxes per decoder call for this case (None: the predictor's own)."""
    strategy = get_strategy(route.strategy)
    predictor.reset()  # embeddings never carry over from one case to the next
    try:
        return strategy.run(case.image, case.boxes, BatchedPredictor(predictor, decode_batch), route.params, on_slice)
    finally:
        predictor.reset()  # free the cache's memory between cases


def guarded_decode_batch(
    dim: int, headers: dict[str, ArrayHeader], boxes: np.ndarray | None, route: Route, predictor: SamPredictor,
    memory: Memory = available_bytes, name: str = "case",
) -> int:
    """The decoder batch the memory guard allows a case in the memory left, from its arrays' `headers` and its
    `boxes` as stored (nothing large is decompressed): the predictor's own when it fits. `predictor` is the
    route's, compiled before `memory()` is asked. Raises CaseError naming the need and the room when the case
    cannot fit at all; `name` names the case in the warning that a smaller batch is used."""
    default_batch = predictor.decode_batch
    if "imgs" not in headers:
        return default_batch  # CaseFile.read names the missing key
    warmth = Warmth(predictor.encoder_calls > 0, predictor.largest_decoded_batch)
    estimate = estimate_case(dim, headers, boxes, route, warmth, predictor.cache.budget_bytes, default_batch)
    available = memory()
    batch = fitting_decode_batch(estimate, available, default_batch)
    if batch != default_batch:
        log.warning("%s: decoding %d boxes at a time to fit in memory (needs %s at %d, %s available)",
                    name, batch, gib(estimate.by_batch[default_batch]), default_batch, gib(available or 0))
    return batch


@contextlib.contextmanager
def _no_progress(case: Case, route: Route, slices: int) -> Iterator[OnSlice]:
    yield lambda: None


class Segmenter:
    """Box-prompted segmentation of images in memory or in case files, models compiled once.

    Every path takes the same routing table (modality -> model and strategy), strategies and memory guard:

        segmenter = Segmenter.create(precision="auto")           # compiles nothing until the first case
        segs = segmenter.segment(volume, boxes, modality="CT")
        result = segmenter.segment_file(Path("3DBox_CT_0001.npz"), output=Path("out/3DBox_CT_0001.npz"))

    table, pool: the routing table and the compiled models (models.pool.ModelPool) it runs on.
    memory: what the process may still allocate (router.memory.available_bytes; None: no memory guard).
    """

    def __init__(self, table: RoutingTable, pool: ModelPool, memory: Memory | None = available_bytes) -> None:
        self.table, self.pool, self.memory = table, pool, memory

    @classmethod
    def create(
        cls, precision: str = "auto", threads: int | None = None, config: Path | None = None,
        models: Path | None = None, ov_cache: Path | None = None,
    ) -> Segmenter:
        """A segmenter with the routing table `config` (None: router/routes.toml), the models exported in
        `models` (None: $SEG_MODEL_DIR or models/ir) at `precision` (auto, fp32, bf16 or int8) on `threads`
        (None: all this process may use) and OpenVINO's compiled-model cache in `ov_cache` (None: none)."""
        return RunConfig.of(models=models, threads=threads, precision=precision, config=config,
                            ov_cache=ov_cache).segmenter()

    def segment(self, image: np.ndarray, boxes: np.ndarray, modality: str) -> np.ndarray:
        """The label map of an image in memory: label i for boxes[i - 1], 0 background.

        image: (H, W, 3) or (H, W) for 2D, (D, H, W) = (z, y, x) for 3D; uint8, or any real dtype scaled to
        0..255 as files are. boxes: (N, 4) [x0, y0, x1, y1] or (N, 6) [x0, y0, z0, x1, y1, z1], inclusive
        pixel indices (N, 6 makes the case 3D). modality: as in a case file's name ("CT", "MR", "PET", ...;
        unknown ones take the table's default). No spacing: no strategy uses one, so the label map would not
        depend on it. Raises router.validation.CaseError (one line) for arrays that cannot be segmented.
        """
        boxes = np.asarray(boxes)
        dim = 3 if boxes.shape[-1:] == (6,) else 2  # one box may come as (6,) or (4,)
        arrays = {"imgs": np.asarray(image), "boxes": boxes}
        name = f"{dim}DBox_{modality}_array"
        _, canonical = case_kind(Path(name + ".npz"))
        headers = {key: ArrayHeader(value.shape, value.dtype) for key, value in arrays.items()}
        route = self.table.route(dim, canonical, self.pool.available)
        decode_batch = self._decode_batch(dim, headers, boxes, route, name)
        case = Case(name, canonical, dim, *validate_case(arrays, dim))
        return self._run(case, route, decode_batch)

    def segment_file(
        self, path: Path, output: Path | None = None, on_route: OnRoute | None = None,
        progress: Progress | None = None,
    ) -> CaseResult:
        """Read the case file at `path`, route it, segment it and, with `output`, write `segs` there atomically.

        The file is opened once (router.casefile.open_case) and closed once the case is read. Before the
        image is decompressed, its npy header gives the case's need (router.memory); a case that fits only
        with fewer boxes per decoder call gets that, one that cannot fit raises CaseError.
        Raises router.casefile.CaseError for a case that cannot be segmented (one-line message); any other
        exception is a failure of this case only.
        """
        start = time.perf_counter()
        with open_case(path) as case_file:  # a file that is not an npz is refused here, before a model compiles
            route = self.table.route(case_file.dim, case_file.modality, self.pool.available)
            decode_batch = self._file_decode_batch(case_file, route)
            case = case_file.read()
        if on_route is not None:
            on_route(case, route)
        segs = self._run(case, route, decode_batch, progress)
        if output is not None:
            write_segs(output, segs)
        return CaseResult(case, route, self.pool.resolve_precision(route.model), segs, time.perf_counter() - start)

    def _file_decode_batch(self, case_file: CaseFile, route: Route) -> int | None:
        """The memory guard's decoder batch for an open case file, from its headers and its stored boxes
        (the image is not decompressed); None without a guard."""
        if self.memory is None:
            return None
        headers = case_file.headers
        boxes = case_file.small_array("boxes", BOXES_MAX_BYTES) if "imgs" in headers else None
        return self._decode_batch(case_file.dim, headers, boxes, route, case_file.path.name)

    def _decode_batch(self, dim: int, headers: dict[str, ArrayHeader], boxes: np.ndarray | None, route: Route,
                      name: str) -> int | None:
        if self.memory is None:
            return None
        predictor = self.pool.get(route.model)  # compiled first: its memory is then part of what is already used
        return guarded_decode_batch(dim, headers, boxes, route, predictor, self.memory, name)

    def _run(self, case: Case, route: Route, decode_batch: int | None, progress: Progress | None = None) -> np.ndarray:
        slices = get_strategy(route.strategy).slice_count(case.boxes, route.params)  # the progress bar's total
        with (progress or _no_progress)(case, route, slices) as on_slice:
            return segment_case(case, route, self.pool.get(route.model), on_slice=on_slice, decode_batch=decode_batch)


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration, parsed once (predict.py) and handed whole to every back-end: what builds its
    Segmenter, in this process or on each Dask worker (frozen and hashable: a worker keys its Segmenter on it).

    models: IR folder (None: $SEG_MODEL_DIR or models/ir); threads: OpenVINO threads (None: the back-end
    decides: the CPUs this process may use, or a worker's share); precision: auto, fp32, bf16 or int8;
    cache_bytes: the embedding cache per model; config: routing table TOML (None: router/routes.toml);
    ov_cache: OpenVINO's compiled-model cache folder (None: $SEG_OV_CACHE_DIR, else none). Paths are absolute
    strings, so every machine of a cluster reads the same ones.
    """

    models: str | None = None
    threads: int | None = None
    precision: str = "auto"
    cache_bytes: int = DEFAULT_CACHE_BYTES
    config: str | None = None
    ov_cache: str | None = None

    @classmethod
    def of(cls, models: Path | None = None, threads: int | None = None, precision: str = "auto",
           cache_bytes: int = DEFAULT_CACHE_BYTES, config: Path | None = None, ov_cache: Path | None = None,
           ) -> RunConfig:
        """The configuration of these paths (made absolute) and values."""
        def absolute(path: Path | None) -> str | None:
            return str(Path(path).resolve()) if path else None

        return cls(absolute(models), threads, precision, cache_bytes, absolute(config), absolute(ov_cache))

    def segmenter(self, threads: int | None = None) -> Segmenter:
        """A Segmenter of this configuration on `threads` (None: `self.threads`). Raises OSError or ValueError
        for a routing table that cannot be read or is wrong (one line); compiles nothing yet."""
        table = RoutingTable.load(Path(self.config) if self.config else None)
        pool = ModelPool(Path(self.models) if self.models else None, threads or self.threads, self.precision,
                         self.cache_bytes, ov_cache=Path(self.ov_cache) if self.ov_cache else None)
        return Segmenter(table, pool)


def is_done(path: Path, output: Path) -> bool:
    """Whether `output` already holds the whole label map of the case at `path` (`--continue-prediction`):
    a `segs` of the image's spatial shape, from its header. Missing, truncated or wrong: not done."""
    if not output.is_file():
        return False
    try:
        dim, _ = case_kind(path)
        image = read_headers(path).get("imgs")
    except CaseError:
        return False
    shape = None if image is None else segs_shape(dim, image)
    return shape is not None and output_is_complete(output, shape)
