"""Reading and writing images with their geometry (SimpleITK), for `seg-convert`.

Axis order: arrays are numpy's (z, y, x) for volumes and (y, x) for 2D images, with a trailing channel
axis for RGB pixels; `Geometry` holds SimpleITK's order (x, y[, z]) for size, spacing, origin and crop
offsets (what `GetSize`/`GetSpacing`/`GetOrigin` return), the reverse of the array axes. `direction` is
SimpleITK's row-major d x d matrix whose columns are the physical directions of the x, y[, z] axes.
Physical points are ITK's LPS millimetres: point = origin + direction @ (spacing * index).

SimpleITK is imported inside the functions that need it (it is a host dependency, not the runtime's).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


class ConvertError(ValueError):
    """An input that cannot be converted; the message names the problem in one line."""


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels sit in physical space, in SimpleITK's (x, y[, z]) order.

    size: voxels per axis (x, y[, z]); spacing: mm per voxel (x, y[, z]); origin: the physical point
    (LPS mm) of voxel 0; direction: row-major d x d matrix, columns = axis directions.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def array_shape(self) -> tuple[int, ...]:
        """The numpy shape of a scalar image with this geometry: (z, y, x) or (y, x)."""
        return tuple(reversed(self.size))

    @classmethod
    def plain(cls, array_shape: tuple[int, ...], spacing: Any = None) -> Geometry:
        """The geometry of a bare (z, y, x) or (y, x) array: origin 0, identity direction, `spacing`
        in (x, y[, z]) order (a challenge case's `spacing`), 1 mm where None."""
        d = len(array_shape)
        spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * d
        return cls(tuple(int(s) for s in reversed(array_shape)), spacing, (0.0,) * d,
                   tuple(float(v) for v in np.eye(d).reshape(-1)))

    @classmethod
    def of(cls, image: Any) -> Geometry:
        """The geometry of a SimpleITK image."""
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    def apply(self, image: Any) -> Any:
        """Set spacing, origin and direction on a SimpleITK image of this size; return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def matrix(self) -> np.ndarray:
        """(d, d) index -> physical offset: direction @ diag(spacing)."""
        d = self.dimension
        return np.asarray(self.direction, np.float64).reshape(d, d) * np.asarray(self.spacing)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """(N, d) physical points (LPS mm) -> (N, d) continuous indices (x, y[, z])."""
        offsets = np.asarray(points, np.float64) - np.asarray(self.origin)
        return np.linalg.solve(self.matrix(), offsets.T).T

    def mismatch(self, other: Geometry) -> str | None:
        """Why `other` does not cover the same voxels as this geometry, or None if it does.

        Tolerances allow for NIfTI's float32 header fields: spacing to 1e-4 relative, origin to a
        thousandth of the smallest spacing, direction cosines to 1e-4.
        """
        if other.size != self.size:
            return f"size {list(other.size)} differs from the image's {list(self.size)}"
        if not np.allclose(other.spacing, self.spacing, rtol=1e-4, atol=0):
            return f"spacing {_rounded(other.spacing)} differs from the image's {_rounded(self.spacing)}"
        if not np.allclose(other.origin, self.origin, rtol=0, atol=1e-3 * min(self.spacing)):
            return f"origin {_rounded(other.origin)} differs from the image's {_rounded(self.origin)}"
        if not np.allclose(other.direction, self.direction, rtol=0, atol=1e-4):
            return f"direction {_rounded(other.direction)} differs from the image's {_rounded(self.direction)}"
        return None

    def to_json(self) -> dict[str, list]:
        return {key: list(value) for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> Geometry:
        try:
            geometry = cls(tuple(int(s) for s in data["size"]), tuple(float(s) for s in data["spacing"]),
                           tuple(float(o) for o in data["origin"]), tuple(float(d) for d in data["direction"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ConvertError(f"geometry needs size, spacing, origin and direction ({error})") from error
        d = geometry.dimension
        if not (len(geometry.spacing) == len(geometry.origin) == d and len(geometry.direction) == d * d):
            raise ConvertError(f"geometry fields disagree on the dimension: {geometry.to_json()}")
        return geometry


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 6) for v in values]


def _first_line(error: BaseException, path: Path) -> str:
    """ITK's multi-line exception text -> its one useful line, without the path the caller names anyway."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # ITK messages put the useful part last ("... Description: Could not create IO object ...")
    useful = [line for line in lines if "Description:" in line or "ERROR" in line.upper()]
    line = (useful or lines or [type(error).__name__])[-1]
    return line.replace("sitk::ERROR: ", "").replace(f'"{path}"', "it").replace(str(path), "it")


def _read_dicom_series(folder: Path, series: str | None) -> Any:
    import SimpleITK as sitk

    series_ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not series_ids:
        raise ConvertError(f"{folder} is a folder without a DICOM series")
    if series is None:
        if len(series_ids) > 1:
            raise ConvertError(f"{folder} holds {len(series_ids)} DICOM series; choose one with --series: "
                               + ", ".join(series_ids))
        series = series_ids[0]
    elif series not in series_ids:
        raise ConvertError(f"{folder} has no DICOM series {series} (found: {', '.join(series_ids)})")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def read_image(path: Path, series: str | None = None) -> tuple[np.ndarray, Geometry]:
    """Read anything SimpleITK reads (NIfTI, NRRD, MHA, PNG, JPEG, a DICOM file or series folder).

    Returns the array ((z, y, x) or (y, x), plus a trailing channel axis for vector pixels such as
    RGB) and its geometry ((x, y[, z]) order). Raises ConvertError with one line if unreadable.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise ConvertError(f"{path} does not exist")
    try:
        image = _read_dicom_series(path, series) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ConvertError(f"{path}: cannot read it: {_first_line(error, path)}") from error
    if image.GetDimension() not in (2, 3):
        raise ConvertError(f"{path} is a {image.GetDimension()}D image; only 2D and 3D images convert")
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def _suffix(path: Path) -> str:
    """The file name ending SimpleITK picks a writer by (".nii.gz", ".nrrd", ...)."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def write_image(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write a scalar array ((z, y, x) or (y, x), matching `geometry.array_shape`) with `geometry` to
    `path` (format from the suffix: .nii.gz, .nrrd, .mha, ...), through a temp file and a rename."""
    import SimpleITK as sitk

    if array.shape != geometry.array_shape:
        raise ConvertError(f"array of shape {array.shape} does not fit geometry of size {list(geometry.size)}")
    image = geometry.apply(sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_suffix(path), dir=path.parent)
    os.close(descriptor)
    try:
        sitk.WriteImage(image, temp_name, useCompression=True)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except RuntimeError as error:
        Path(temp_name).unlink(missing_ok=True)
        raise ConvertError(f"cannot write {path}: {_first_line(error, Path(temp_name))}") from error
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
