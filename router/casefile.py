"""Reading and writing challenge case files (`.npz`).

Axis order:
  * 2D cases (`2DBox_<Modality>_<id>.npz`): `imgs` is (H, W, 3) (a grey (H, W) image is accepted and
    repeated to 3 channels); `boxes` is (N, 4) as `[x_min, y_min, x_max, y_max]` in pixels, inclusive.
  * 3D cases (`3DBox_<Modality>_<id>.npz`): `imgs` is (D, H, W) = (z, y, x); `boxes` is (N, 6) as
    `[x_min, y_min, z_min, x_max, y_max, z_max]`, inclusive (z_max included); `spacing` is (3,) and is
    stored in SimpleITK `GetSpacing()` order (x, y, z), i.e. the REVERSE of the array axes. It is validated
    (a bad one refuses the case) but not kept in `Case`: no strategy uses it.

Output: `segs`, a label map of the image's spatial shape ((H, W) or (D, H, W)); 0 is background and
label i belongs to `boxes[i - 1]`; uint8 for up to 255 boxes, uint16 above (router.strategies.labels.label_dtype).

A case is opened once (`open_case`) and read through that one handle in the order the pipeline needs
it: its kind from its name, then, before anything is decompressed, each array's declared shape and dtype
from the npy header at the start of its zip member (router.memory estimates a case's memory from them),
its small `boxes`, and last the whole validated `Case`.

Inputs are loaded with `allow_pickle=False` (a case file must never execute code) and never modified;
outputs are written to a temporary file in the target folder and renamed, so none is half-written.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib.npyio import NpzFile

from router.modality import CaseNameError, parse_case_name
from router.validation import CaseError, validate_case


@dataclass(frozen=True)
class Case:
    """One validated case (router.validation.CaseArrays, with its name, modality and dimension).

    image: uint8, (H, W, 3) for 2D or (D, H, W) for 3D.
    boxes: int64, (N, 4) for 2D or (N, 6) for 3D, clipped to the image, inclusive corners.
    """

    name: str
    modality: str
    dim: int
    image: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class ArrayHeader:
    """An array's shape and dtype as its npy header declares them (nothing decompressed)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes the array takes once loaded (Python ints: a forged shape cannot overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def case_kind(path: Path) -> tuple[int, str]:
    """(dimension, modality) from a case's file name; CaseError for a name that is not a case's."""
    try:
        return parse_case_name(Path(path).name)
    except CaseNameError as error:
        raise CaseError(str(error)) from error


NOT_A_ZIP = "not a readable .npz file (not a zip archive)"


def _headers_of(archive: zipfile.ZipFile) -> dict[str, ArrayHeader]:
    """Array name ("imgs", ...) -> its declared shape and dtype, read from the start of each `.npy` member
    of an open npz without decompressing the rest: a 10 MB file may declare a 10 GB array."""
    headers = {}
    try:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _HEADER_READERS:
                    raise CaseError(f"array '{info.filename}' has unsupported npy format version {version}")
                shape, _, dtype = _HEADER_READERS[version](member)
            headers[info.filename.removesuffix(".npy")] = ArrayHeader(tuple(shape), np.dtype(dtype))
    except CaseError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CaseError(f"not a readable .npz file ({type(error).__name__}: {error})") from error
    return headers


def read_headers(path: Path) -> dict[str, ArrayHeader]:
    """Array name ("imgs", ...) -> its declared shape and dtype, from the npz at `path` (any file name) without
    decompressing an array; `open_case(path).headers` is the same for a case already open."""
    if not zipfile.is_zipfile(path):
        raise CaseError(NOT_A_ZIP)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CaseError(f"not a readable .npz file ({type(error).__name__}: {error})") from error
    with archive:
        return _headers_of(archive)


@contextlib.contextmanager
def _loading_arrays() -> Iterator[None]:
    """Raise what np.load and NpzFile raise for a bad file or array as a one-line CaseError."""
    try:
        yield
    except CaseError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CaseError(f"not a readable .npz file ({type(error).__name__}: {error})") from error
    except ValueError as error:
        if "pickle" in str(error):  # object arrays: loading them could execute code
            raise CaseError("unreadable array: it holds pickled Python objects, which are never loaded") from error
        raise CaseError(f"unreadable array ({error})") from error


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator[NpzFile]:
    """The npz at `path` opened once (one file handle, one zip directory read), `allow_pickle=False`; closed
    on exit. CaseError (one line) when it is not a zip archive or numpy cannot open it."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open(path, "rb"))
        except OSError as error:  # as zipfile.is_zipfile says of a file it cannot open
            raise CaseError(NOT_A_ZIP) from error
        if not zipfile.is_zipfile(handle):
            raise CaseError(NOT_A_ZIP)
        handle.seek(0)
        with _loading_arrays():
            npz = stack.enter_context(np.load(handle, allow_pickle=False))
        yield npz


class CaseFile:
    """One case file, opened once (`open_case`) and read through that handle: its kind from its name, then,
    when asked, its arrays' npy headers (nothing decompressed), a small array (the memory guard's boxes) and
    last the whole validated Case. Axis orders: the module docstring.

    path: as given; dim: 2 or 3 and modality (canonical spelling) from the file name.
    """

    def __init__(self, path: Path, dim: int, modality: str, npz: NpzFile) -> None:
        self.path, self.dim, self.modality, self._npz = path, dim, modality, npz

    @cached_property
    def headers(self) -> dict[str, ArrayHeader]:
        """Array name ("imgs", ...) -> declared shape and dtype (read once, before any array is loaded)."""
        if self._npz.zip is None:  # NpzFile drops its zip when closed
            raise ValueError(f"{self.path.name} was read after open_case closed it")
        return _headers_of(self._npz.zip)

    def small_array(self, name: str, max_bytes: int) -> np.ndarray | None:
        """Array `name` (only that member is decompressed) when its header declares at most `max_bytes`;
        None when it is absent, larger or unreadable (`read` then says what is wrong)."""
        if name not in self.headers or self.headers[name].nbytes > max_bytes:
            return None
        try:
            return np.asarray(self._npz[name])
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
            return None

    def read(self) -> Case:
        """The case's arrays loaded and validated (router.validation.validate_case); CaseError with a
        one-line reason if it is unusable."""
        keys = set(self._npz.files)
        for key in ("imgs", "boxes"):
            if key not in keys:
                raise CaseError(f"missing key '{key}' (found: {sorted(keys) or 'none'})")
        with _loading_arrays():
            arrays: dict[str, np.ndarray] = {key: self._npz[key] for key in ("imgs", "boxes", "spacing") if key in keys}
        return Case(self.path.stem, self.modality, self.dim, *validate_case(arrays, self.dim))


@contextlib.contextmanager
def open_case(path: Path) -> Iterator[CaseFile]:
    """The case file at `path`, opened once for everything read from it and closed on exit. CaseError (one
    line) for a name that is not a case's or a file that is not an npz."""
    path = Path(path)
    dim, modality = case_kind(path)
    with _open_npz(path) as npz:
        yield CaseFile(path, dim, modality, npz)


def segs_shape(dim: int, image: ArrayHeader) -> tuple[int, ...] | None:
    """The label map's shape for an `imgs` header: (H, W) for 2D, (D, H, W) for 3D; None when the header's
    shape is not one CaseFile.read accepts (it will say why)."""
    if dim == 2 and (len(image.shape) == 2 or (len(image.shape) == 3 and image.shape[2] in (1, 3, 4))):
        return image.shape[:2]
    if dim == 3 and len(image.shape) == 3:
        return image.shape
    return None


def read_case(path: Path) -> Case:
    """Read one case file and validate it (router.validation.validate_case); raise CaseError with a
    one-line reason if it is unusable."""
    with open_case(path) as case_file:
        return case_file.read()


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write` on a temp file beside `path`, then rename it to `path`: a reader sees the old file or
    the whole new one, never half of it. The file is made readable by all (mkstemp makes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write `arrays` to `path` (.npz, compressed) atomically: never half-written."""
    # numpy types **kwds as its allow_pickle flag; these are arrays
    _write_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))  # type: ignore[arg-type]


def write_segs(path: Path, segs: np.ndarray) -> None:
    """Write `segs` to `path` (.npz, compressed) atomically: never half-written."""
    write_npz(path, segs=segs)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file (e.g. efficiency.csv) atomically."""
    _write_atomic(path, lambda handle: handle.write(text.encode()))


def output_is_complete(output: Path, shape: tuple[int, ...]) -> bool:
    """Whether `output` holds a whole `segs` label map of `shape` (`--continue-prediction` skips such cases).

    A missing, truncated or foreign file is not (reading every byte checks the zip's CRCs); a leftover
    temp file of an interrupted write never is, since it has another name.
    """
    try:
        with np.load(output, allow_pickle=False) as npz:
            segs = npz["segs"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return segs.shape == tuple(shape) and segs.dtype in (np.uint8, np.uint16)


def remove_stale_temps(output: Path) -> None:
    """Delete temp files an interrupted write of `output` left beside it (`.<name>.XXXX.tmp`, a SIGKILL)."""
    for stale in Path(output).parent.glob(f".{glob.escape(Path(output).name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def check_writable(folder: Path) -> None:
    """Raise OSError unless a file can be created in `folder` (made if missing); root ignores permission
    bits, so only trying tells."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=".seg-write-check.", dir=folder)
    os.close(descriptor)
    os.unlink(name)
