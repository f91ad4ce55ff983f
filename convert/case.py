"""An image (+ labels or boxes) -> a challenge case, and a case's label map -> an image in the source geometry.

Layout `to_case` writes under its output folder (the challenge's `imgs/` and `gts/` pair, as
`seg-predict -i` and `seg-score -g` read them):
  imgs/<name>.npz      `imgs` ((D, H, W) or (H, W, 3) uint8), `boxes`, and for 3D `spacing` (x, y, z)
  gts/<name>.npz       `gts` (label map, case label i = boxes[i - 1]), `boxes`, `spacing` (with labels only)
  geometry/<name>.json the source image's geometry, the crop, the original label values (see SIDE_CAR_KEYS)
where <name> is `2DBox_<Modality>_<id>` or `3DBox_<Modality>_<id>`. Arrays are (z, y, x); size, spacing,
origin and crop offsets are (x, y, z), as SimpleITK (and the challenge's `spacing`) has them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.boxes import check_boxes, crop_region, integer_labels, label_boxes, read_boxes, relabel
from convert.intensity import case_image
from convert.io import ConvertError, Geometry, read_image, write_image
from router.casefile import write_npz, write_text_atomic
from router.modality import MODALITY_ALIASES

SIDECAR_FORMAT = "seg-convert geometry 1"
SIDE_CAR_KEYS = ("format", "case", "source", "geometry", "crop_offset", "crop_size", "label_values", "intensity")


@dataclass(frozen=True)
class Written:
    """What `to_case` wrote: the paths, and a one-line summary."""

    name: str
    imgs: Path
    gts: Path | None
    sidecar: Path
    summary: str


def canonical_modality(text: str) -> tuple[str, bool]:
    """A modality given by the user -> (the name a case file carries, whether the router knows it)."""
    wanted = text.lower().replace("-", "")
    for name, aliases in MODALITY_ALIASES.items():
        if wanted == name.lower() or wanted in aliases:
            return name, True
    token = re.sub(r"[^A-Za-z0-9]+", "", text)
    if not token:
        raise ConvertError(f"modality {text!r} has no letters or digits")
    return token, False


def case_id(path: Path) -> str:
    """A file or folder name -> an id for the case name: no extension, only letters, digits, hyphens
    (an underscore would start a new token of the case name)."""
    name = Path(path).name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem if "." in name else name
    return re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "case"


def _check_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]+", text):
        raise ConvertError(f"--id must be letters, digits and hyphens, got {text!r}")
    return text


def _region(offset: np.ndarray, size: np.ndarray) -> tuple[slice, ...]:
    """(x, y[, z]) offset and size -> the array slices, in (z, y, x) order."""
    return tuple(slice(int(o), int(o + s)) for o, s in zip(offset[::-1], size[::-1], strict=True))


def to_case(image_path: Path, out_dir: Path, modality: str, labels_path: Path | None = None,
            boxes_path: Path | None = None, window: tuple[float, float] = (40.0, 400.0),
            split_components: bool = False, min_voxels: int = 0, crop: int | None = None,
            crop_slices: int | None = None, name_id: str | None = None, series: str | None = None) -> Written:
    """Convert one image into a case under `out_dir` (layout in the module docstring).

    Everything is computed and checked before the first file is written; each file is written through
    a temp file and a rename, the case's `imgs` last. Raises ConvertError with a one-line reason.
    """
    if labels_path is not None and boxes_path is not None:
        raise ConvertError("give --labels or --boxes, not both")
    if crop is not None and crop_slices is not None:
        raise ConvertError("give --crop or --crop-slices, not both")
    modality, known = canonical_modality(modality)
    array, geometry = read_image(image_path, series)
    if geometry.dimension == 3 and array.ndim == 4:
        raise ConvertError(f"{image_path} is a volume of vector pixels; only 2D images may have channels")
    dim = 2 if geometry.dimension == 2 or geometry.size[2] == 1 else 3  # one slice: a 2D case
    if dim < geometry.dimension:
        array = array[0]
    try:
        image, rule = case_image(array, modality, dim, window)
    except ValueError as error:
        raise ConvertError(f"{image_path}: {error}") from error
    spatial_shape = image.shape[:2] if dim == 2 else image.shape

    case_labels: np.ndarray | None = None
    label_values: list[int] | None = None
    if labels_path is not None:
        labels, label_geometry = read_image(labels_path, series)
        if labels.ndim != geometry.dimension:
            raise ConvertError(f"labels {labels_path} have vector pixels; a label map has one value per voxel")
        why = geometry.mismatch(label_geometry)
        if why:
            raise ConvertError(f"labels {labels_path} do not match the image: {why}")
        labels = integer_labels(labels[0] if dim < geometry.dimension else labels)
        try:
            case_labels, label_values = relabel(labels, split_components, min_voxels)
        except ConvertError as error:
            raise ConvertError(f"labels {labels_path}: {error}") from error
        boxes = label_boxes(case_labels)
    elif boxes_path is not None:
        boxes = check_boxes(read_boxes(boxes_path, geometry, dim), spatial_shape)
    else:
        boxes = np.zeros((0, 2 * dim), np.int64)

    offset = np.zeros(dim, np.int64)
    size = np.array(spatial_shape[::-1], np.int64)
    if crop is not None or crop_slices is not None:
        if crop_slices is not None and dim == 2:
            raise ConvertError("--crop-slices needs a volume; use --crop for a 2D image")
        margin = crop if crop is not None else crop_slices
        if margin is None or margin < 0:
            raise ConvertError(f"the crop margin must be 0 or more voxels, got {margin}")
        offset, size = crop_region(boxes, spatial_shape, margin, slices_only=crop_slices is not None)
        region = _region(offset, size)
        image = np.ascontiguousarray(image[region])
        if case_labels is not None:
            case_labels = np.ascontiguousarray(case_labels[region])
        boxes = boxes - np.concatenate([offset, offset])

    name = f"{dim}DBox_{modality}_{_check_id(name_id) if name_id else case_id(image_path)}"
    extra = {} if dim == 2 else {"spacing": np.asarray(geometry.spacing, np.float64)}
    pad = [0] * (geometry.dimension - dim)  # a single-slice volume: its z offset 0, size 1
    sidecar = {
        "format": SIDECAR_FORMAT,
        "case": name,
        "source": str(image_path),
        "geometry": geometry.to_json(),
        "crop_offset": [int(v) for v in offset] + pad,
        "crop_size": [int(v) for v in size] + [1] * len(pad),
        "label_values": label_values,
        "intensity": rule,
        "axes": "arrays (z, y, x); size, spacing, origin, crop_offset, crop_size (x, y, z); "
                "direction row-major, columns = axis directions; physical points in LPS mm",
    }
    out_dir = Path(out_dir)
    paths = {kind: out_dir / kind / f"{name}.{'json' if kind == 'geometry' else 'npz'}"
             for kind in ("imgs", "gts", "geometry")}
    write_text_atomic(paths["geometry"], json.dumps(sidecar, indent=2) + "\n")
    if case_labels is not None:
        write_npz(paths["gts"], gts=case_labels, boxes=boxes, **extra)
    write_npz(paths["imgs"], imgs=image, boxes=boxes, **extra)
    notes = "" if known else f" (modality {modality} is not in the routing table: the default route takes it)"
    summary = (f"{name}: {dim}D, {len(boxes)} boxes, imgs {tuple(image.shape)}, {rule['rule']}"
               + (f", cropped at {offset.tolist()} (x, y[, z])" if crop is not None or crop_slices is not None else "")
               + f" -> {paths['imgs']}{notes}")
    return Written(name, paths["imgs"], paths["gts"] if case_labels is not None else None, paths["geometry"], summary)


def find_sidecar(segs_path: Path) -> Path | None:
    """The geometry JSON `to_case` wrote for this case: beside the file, or in ../geometry/ (the layout
    `seg-predict -i DIR/imgs -o DIR/segs` leaves)."""
    segs_path = Path(segs_path)
    for candidate in (segs_path.with_suffix(".json"), segs_path.parent.parent / "geometry" / f"{segs_path.stem}.json",
                      segs_path.parent / "geometry" / f"{segs_path.stem}.json"):
        if candidate.is_file():
            return candidate
    return None


def _load_label_map(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in ("segs", "gts"):
                if key in npz.files:
                    labels = npz[key]
                    break
            else:
                raise ConvertError(f"{path} has no 'segs' or 'gts' array (found: {sorted(npz.files)})")
    except ConvertError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise ConvertError(f"cannot read {path}: {error}") from error
    if labels.dtype.kind not in "biu" or labels.min(initial=0) < 0:
        raise ConvertError(f"{path}: a label map must hold non-negative integers, got {labels.dtype}")
    return labels


def to_image(segs_path: Path, out_path: Path, reference: Path | None = None, geometry_path: Path | None = None,
             series: str | None = None) -> str:
    """Write a case's label map (`segs`, or `gts`) as an image in its source's full geometry.

    The geometry comes from `reference` (any image `to_case` reads) or else from the sidecar JSON;
    the crop offset and the original label values come from the sidecar when there is one (without
    it, `segs` must cover the whole reference and keeps its label numbers). Returns a summary line.
    """
    segs = _load_label_map(segs_path)
    sidecar_path = geometry_path or find_sidecar(segs_path)
    sidecar: dict | None = None
    if sidecar_path is not None:
        try:
            sidecar = json.loads(Path(sidecar_path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConvertError(f"cannot read geometry file {sidecar_path}: {error}") from error
        if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
            raise ConvertError(f"{sidecar_path} is not a geometry file written by seg-convert to-case")
        missing = [key for key in SIDE_CAR_KEYS if key not in sidecar]
        if missing:
            raise ConvertError(f"{sidecar_path} lacks {', '.join(missing)}: write it again with seg-convert to-case")
    if sidecar is None and reference is None:
        raise ConvertError(f"no geometry: pass --reference IMAGE, or keep the geometry/"
                           f"{Path(segs_path).stem}.json that to-case wrote")
    full = Geometry.from_json(sidecar["geometry"]) if sidecar else None
    if reference is not None:
        _, reference_geometry = read_image(reference, series)
        if full is not None and full.size != reference_geometry.size:
            raise ConvertError(f"reference {reference} has size {list(reference_geometry.size)}, the case's source "
                               f"had {list(full.size)}")
        full = reference_geometry
    assert full is not None
    offset = np.array(sidecar["crop_offset"] if sidecar else [0] * full.dimension, np.int64)
    values = sidecar.get("label_values") if sidecar else None

    if segs.ndim == full.dimension - 1 and full.size[-1] == 1:
        segs = segs[None]  # a 2D case from a single-slice volume
    size = np.array(segs.shape[::-1], np.int64)
    if segs.ndim != full.dimension or offset.shape != size.shape or np.any(offset < 0) or np.any(
            offset + size > np.array(full.size)):
        raise ConvertError(f"a label map of shape {segs.shape} (z, y, x) at offset {offset.tolist()} "
                           f"(x, y, z) does not fit an image of size {list(full.size)} (x, y, z)")
    if values:
        if int(segs.max(initial=0)) > len(values):
            raise ConvertError(f"label {int(segs.max())} but the case had {len(values)} objects")
        lut = np.array([0, *values], np.int64)
        segs = lut[segs]
    top = int(segs.max(initial=0))
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    out = np.zeros(full.array_shape, dtype)
    out[_region(offset, size)] = segs
    write_image(out, full, out_path)
    return (f"{Path(segs_path).name}: labels {sorted(int(v) for v in np.unique(out) if v)} in size "
            f"{list(full.size)} spacing {[round(s, 4) for s in full.spacing]} -> {out_path}")
