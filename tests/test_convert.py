"""seg-convert: real image files -> challenge cases -> label maps in the source geometry.

Volumes are made here (24x64x64, anisotropic spacing, a rotated direction), written as NIfTI, NRRD
and a DICOM series with SimpleITK; nothing under shared/ is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from convert.cli import main as convert_main  # noqa: E402
from convert.intensity import ct_window, min_max, parse_window, percentile_rule  # noqa: E402
from sample_data.synthetic import ellipsoid  # noqa: E402
from tests.helpers import dice  # noqa: E402

SHAPE = (24, 64, 64)  # (z, y, x)
SPACING = (0.8, 0.7, 2.5)  # (x, y, z)
ORIGIN = (-31.5, 12.25, 104.0)
ANGLE = np.deg2rad(20.0)
# a rotation about z, then x swapped with -x... kept right-handed (det +1) so a DICOM series can hold it
DIRECTION = (np.cos(ANGLE), -np.sin(ANGLE), 0.0, np.sin(ANGLE), np.cos(ANGLE), 0.0, 0.0, 0.0, 1.0)


def _ct_and_labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(24, 64, 64) int16 HU volume and its label map with values 2 and 5 (a gap, not 1..N)."""
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -30.0)
    labels = np.zeros(SHAPE, np.uint8)
    for value, centre, radii, level in ((2, (12, 22, 22), (7, 11, 13), 180.0), (5, (10, 44, 44), (5, 9, 8), 120.0)):
        inside = ellipsoid(SHAPE, centre, radii)
        hu[inside] = level
        labels[inside] = value
    hu[:, :4, :] = -1000.0  # air at the top rows: the window's lower bound is reached
    return np.rint(hu + rng.normal(0, 8, SHAPE)).astype(np.int16), labels


def _image(array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _write(array: np.ndarray, path: Path, **geometry) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(array, **geometry), str(path))
    return path


def _write_dicom_series(array: np.ndarray, folder: Path) -> Path:
    """A CT DICOM series of int16 slices with the tags a reader needs to rebuild the geometry."""
    folder.mkdir(parents=True)
    volume = _image(array)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = DIRECTION
    series_tags = {
        "0008|0060": "CT",
        "0008|0021": "20261201", "0008|0031": "120000",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
        "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
        "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),  # row, column cosines
        "0018|0050": str(SPACING[2]),
        "0008|103e": "seg-convert test",
    }
    for z in range(array.shape[0]):
        piece = volume[:, :, z]
        for tag, value in series_tags.items():
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{z + 1}")
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, z))))
        piece.SetMetaData("0020|0013", str(z + 1))
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(piece)
    return folder


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- intensity rules, against values computed by hand ----

def test_ct_window_soft_tissue_matches_hand_values() -> None:
    # L40/W400: [-160, 240] -> 0..255; floor((v + 160) / 400 * 255)
    hu = np.array([-1000, -160, -159, 0, 40, 239, 240, 3000])
    assert ct_window(hu, 40, 400).tolist() == [0, 0, 0, 102, 127, 254, 255, 255]  # 160/400*255 = 102.0
    assert parse_window("soft-tissue") == (40.0, 400.0)
    assert parse_window("-600,1500") == parse_window("lung") == (-600.0, 1500.0)
    # lung L-600/W1500: [-1350, 150]; -600 -> 750/1500*255 = 127.5 -> 127
    assert ct_window(np.array([-1350, -600, 150]), *parse_window("lung")).tolist() == [0, 127, 255]
    with pytest.raises(ValueError):
        parse_window("40")


def test_mr_pet_percentile_rule_matches_hand_values() -> None:
    # non-zero voxels 1..200: numpy's linear percentiles are 1 + 0.005 * 199 = 1.995 and 1 + 0.995 * 199 = 199.005
    values = np.concatenate([np.zeros(50), np.arange(1, 201)]).reshape(10, 25)
    out = percentile_rule(values).reshape(-1)
    assert out[:50].tolist() == [0] * 50  # zeros stay zero
    assert out[50] == 0 and out[51] == 0  # 1 -> clipped to 1.995 -> 0; 2 -> 0.005 / 197.01 * 255 = 0.006
    assert out[50 + 99] == 126  # 100 -> (100 - 1.995) / 197.01 * 255 = 126.85
    assert out[50 + 198] == 254  # 199, under the upper percentile: 197.005 / 197.01 * 255 = 254.99
    assert out[50 + 199] == 255  # 200 -> clipped to 199.005
    assert percentile_rule(np.zeros((3, 3))).max() == 0


def test_min_max_grey() -> None:
    assert min_max(np.array([[10, 20], [30, 110]])).tolist() == [[0, 25], [51, 255]]  # 10/100*255 = 25.5


# ---- to-case and to-image on files ----

def test_nifti_round_trip_keeps_geometry_and_voxels(tmp_path) -> None:
    """to-case (cropped to the labelled slices) then to-image of the case's own gts: the input label map
    comes back voxel for voxel, with the input's size, spacing, origin and direction."""
    hu, labels = _ct_and_labels()
    image = _write(hu, tmp_path / "scan.nii.gz")
    label_file = _write(labels, tmp_path / "scan_labels.nii.gz")
    assert convert_main(["to-case", str(image), "--labels", str(label_file), "--modality", "ct", "--crop-slices", "1",
                         "--window", "-20,400", "-o", str(tmp_path / "cases")]) == 0
    name = "3DBox_CT_scan"
    case, gts = _npz(tmp_path / "cases" / "imgs" / f"{name}.npz"), _npz(tmp_path / "cases" / "gts" / f"{name}.npz")
    sidecar = json.loads((tmp_path / "cases" / "geometry" / f"{name}.json").read_text())
    z_labelled = np.flatnonzero(labels.any(axis=(1, 2)))  # 3..19
    z0, z1 = z_labelled[0] - 1, z_labelled[-1] + 1
    assert sidecar["crop_offset"] == [0, 0, int(z0)] and sidecar["crop_size"] == [64, 64, int(z1 - z0 + 1)]
    assert sidecar["label_values"] == [2, 5]
    assert sidecar["intensity"] == {"rule": "ct window", "level": -20.0, "width": 400.0}
    # arrays (z, y, x), spacing (x, y, z) as SimpleITK's GetSpacing
    assert case["imgs"].shape == (z1 - z0 + 1, 64, 64) and case["imgs"].dtype == np.uint8
    np.testing.assert_array_equal(case["imgs"], ct_window(hu[z0 : z1 + 1], -20, 400))
    np.testing.assert_allclose(case["spacing"], SPACING)
    np.testing.assert_array_equal(gts["gts"], (labels[z0 : z1 + 1] == 2) * 1 + (labels[z0 : z1 + 1] == 5) * 2)
    for index, value in enumerate((2, 5)):  # box i: x first, inclusive, in the cropped case's voxels
        z, y, x = np.nonzero(labels == value)
        assert case["boxes"][index].tolist() == [x.min(), y.min(), z.min() - z0, x.max(), y.max(), z.max() - z0]

    out = tmp_path / "back.nii.gz"
    assert convert_main(["to-image", str(tmp_path / "cases" / "gts" / f"{name}.npz"), "-o", str(out)]) == 0
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == (64, 64, 24)
    np.testing.assert_allclose(back.GetSpacing(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), DIRECTION, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    # the same through --reference (the geometry from the scan itself, the crop from the sidecar)
    out2 = tmp_path / "back.nrrd"
    assert convert_main(["to-image", str(tmp_path / "cases" / "gts" / f"{name}.npz"), "-o", str(out2),
                         "--reference", str(image)]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out2))), labels)


def test_round_trip_through_predict(tmp_path, ir_dir) -> None:
    """NIfTI -> to-case -> predict.py (real LiteMedSAM) -> to-image: the segmentation overlays the scan."""
    import predict

    hu, labels = _ct_and_labels(seed=1)
    image = _write(hu, tmp_path / "patient-7.nii.gz")
    label_file = _write(labels, tmp_path / "labels.nii.gz")
    cases = tmp_path / "cases"
    assert convert_main(["to-case", str(image), "--labels", str(label_file), "--modality", "CT", "--crop", "4",
                         "-o", str(cases)]) == 0
    assert predict.main(["-i", str(cases / "imgs"), "-o", str(cases / "segs"), "--no-progress",
                         "--models", str(ir_dir)]) == 0
    out = tmp_path / "patient-7_seg.nii.gz"
    assert convert_main(["to-image", str(cases / "segs" / "3DBox_CT_patient-7.npz"), "-o", str(out)]) == 0
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == (64, 64, 24)
    np.testing.assert_allclose(back.GetSpacing(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), DIRECTION, atol=1e-6)
    segs = sitk.GetArrayFromImage(back)
    assert set(np.unique(segs)) <= {0, 2, 5}  # the input's label values, not the case's 1..N
    for value in (2, 5):
        assert dice(segs == value, labels == value) > 0.8, value
    # the same physical point carries the label in both files: a voxel deep inside label 2
    point = sitk.ReadImage(str(label_file)).TransformIndexToPhysicalPoint((22, 22, 12))
    assert segs[tuple(reversed(back.TransformPhysicalPointToIndex(point)))] == 2


def test_dicom_series_converts_like_its_nifti_twin(tmp_path) -> None:
    hu, labels = _ct_and_labels(seed=2)
    nifti = _write(hu, tmp_path / "twin.nii.gz")
    dicom = _write_dicom_series(hu, tmp_path / "twin")
    label_file = _write(labels, tmp_path / "labels.nii.gz")
    read = sitk.ImageSeriesReader()
    read.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dicom)))
    assert read.Execute().GetSize() == (64, 64, 24)
    for source, out in ((nifti, "from_nifti"), (dicom, "from_dicom")):
        assert convert_main(["to-case", str(source), "--labels", str(label_file), "--modality", "CT",
                             "--crop-slices", "2", "-o", str(tmp_path / out)]) == 0
    a, b = (_npz(tmp_path / out / "imgs" / "3DBox_CT_twin.npz") for out in ("from_nifti", "from_dicom"))
    np.testing.assert_array_equal(a["imgs"], b["imgs"])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_allclose(a["spacing"], b["spacing"], rtol=1e-5)
    ga, gb = (json.loads((tmp_path / out / "geometry" / "3DBox_CT_twin.json").read_text())["geometry"]
              for out in ("from_nifti", "from_dicom"))
    assert ga["size"] == gb["size"]
    np.testing.assert_allclose(ga["origin"], gb["origin"], atol=1e-4)
    np.testing.assert_allclose(ga["direction"], gb["direction"], atol=1e-5)
    # and back onto the DICOM geometry
    out = tmp_path / "seg.nii.gz"
    assert convert_main(["to-image", str(tmp_path / "from_nifti" / "gts" / "3DBox_CT_twin.npz"), "-o", str(out),
                         "--reference", str(dicom)]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), labels)


def test_world_and_ras_boxes_give_the_label_boxes(tmp_path) -> None:
    hu, labels = _ct_and_labels()
    image = _write(hu, tmp_path / "scan.nrrd")
    volume = sitk.ReadImage(str(image))
    world, ras = [], []
    for value in (2, 5):
        z, y, x = np.nonzero(labels == value)
        corners = [volume.TransformIndexToPhysicalPoint((int(x.min()), int(y.min()), int(z.min()))),
                   volume.TransformIndexToPhysicalPoint((int(x.max()), int(y.max()), int(z.max())))]
        world.append([c for corner in corners for c in corner])
        ras.append([c * s for corner in corners for c, s in zip(corner, (-1, -1, 1), strict=True)])
    for kind, boxes in (("world", world), ("ras", ras)):
        (tmp_path / f"{kind}.json").write_text(json.dumps({"coordinates": kind, "boxes": boxes}))
        assert convert_main(["to-case", str(image), "--boxes", str(tmp_path / f"{kind}.json"), "--modality", "CT",
                             "--id", kind, "-o", str(tmp_path / "cases")]) == 0
    _write(labels, tmp_path / "labels.nrrd")
    assert convert_main(["to-case", str(image), "--labels", str(tmp_path / "labels.nrrd"), "--modality", "CT",
                         "--id", "labels", "-o", str(tmp_path / "cases")]) == 0
    expected = _npz(tmp_path / "cases" / "imgs" / "3DBox_CT_labels.npz")["boxes"]
    for kind in ("world", "ras"):
        np.testing.assert_array_equal(_npz(tmp_path / "cases" / "imgs" / f"3DBox_CT_{kind}.npz")["boxes"], expected)
    assert not (tmp_path / "cases" / "gts" / "3DBox_CT_world.npz").exists()  # no labels, no ground truth


def test_split_components_and_mr_rule(tmp_path) -> None:
    rng = np.random.default_rng(3)
    mr = np.zeros(SHAPE, np.float32)
    mr[2:22, 4:60, 4:60] = rng.uniform(100, 900, (20, 56, 56))
    labels = np.zeros(SHAPE, np.uint8)
    labels[8:12, 10:20, 10:20] = 1
    labels[8:12, 40:50, 40:50] = 1  # the same label, a second piece
    labels[20, 60, 60] = 1  # and a speck, under --min-voxels
    _write(mr, tmp_path / "mr.mha")
    _write(labels, tmp_path / "labels.mha")
    assert convert_main(["to-case", str(tmp_path / "mr.mha"), "--labels", str(tmp_path / "labels.mha"),
                         "--modality", "MRI", "--split-components", "--min-voxels", "2",
                         "-o", str(tmp_path / "out")]) == 0
    case = _npz(tmp_path / "out" / "imgs" / "3DBox_MR_mr.npz")
    assert case["boxes"].tolist() == [[10, 10, 8, 19, 19, 11], [40, 40, 8, 49, 49, 11]]
    np.testing.assert_array_equal(case["imgs"], percentile_rule(mr))
    assert case["imgs"][0].max() == 0 and case["imgs"].max() == 255
    sidecar = json.loads((tmp_path / "out" / "geometry" / "3DBox_MR_mr.json").read_text())
    assert sidecar["label_values"] == [1, 1]


def test_png_photo_and_grey_image(tmp_path) -> None:
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(photo, isVector=True), str(tmp_path / "photo.png"))
    grey = rng.integers(20, 120, (40, 50), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "grey.png"))
    (tmp_path / "boxes.json").write_text("[[5, 6, 20, 30]]")
    for name in ("photo", "grey"):
        assert convert_main(["to-case", str(tmp_path / f"{name}.png"), "--boxes", str(tmp_path / "boxes.json"),
                             "--modality", "Dermoscopy", "-o", str(tmp_path / "out")]) == 0
    case = _npz(tmp_path / "out" / "imgs" / "2DBox_Dermoscopy_photo.npz")
    np.testing.assert_array_equal(case["imgs"], photo)
    assert case["boxes"].tolist() == [[5, 6, 20, 30]] and "spacing" not in case
    grey_case = _npz(tmp_path / "out" / "imgs" / "2DBox_Dermoscopy_grey.npz")["imgs"]
    assert grey_case.shape == (40, 50, 3) and grey_case.min() == 0 and grey_case.max() == 255
    np.testing.assert_array_equal(grey_case[:, :, 1], min_max(grey))
    segs = np.zeros((40, 50), np.uint8)
    segs[6:31, 5:21] = 1
    np.savez(tmp_path / "out" / "2DBox_Dermoscopy_photo.npz", segs=segs)  # beside imgs/: sidecar in ./geometry
    assert convert_main(["to-image", str(tmp_path / "out" / "2DBox_Dermoscopy_photo.npz"), "-o",
                         str(tmp_path / "mask.png")]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.png"))), segs)


# ---- bad input: one line, nothing written ----

def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    hu, labels = _ct_and_labels()
    image = str(_write(hu, tmp_path / "in" / "scan.nii.gz"))
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not an image at all")
    other_spacing = str(_write(labels, tmp_path / "in" / "shifted.nii.gz", spacing=(0.8, 0.7, 3.0)))
    empty = str(_write(np.zeros_like(labels), tmp_path / "in" / "empty.nii.gz"))
    (tmp_path / "in" / "outside.json").write_text(json.dumps([[70, 0, 0, 90, 10, 5]]))
    (tmp_path / "in" / "world.json").write_text(json.dumps({"coordinates": "world", "boxes": [[500, 500, 500,
                                                                                               600, 600, 600]]}))
    np.savez(tmp_path / "in" / "3DBox_CT_lost.npz", segs=labels)
    out = str(tmp_path / "out")
    return {
        "unreadable": ["to-case", str(tmp_path / "in" / "broken.nii.gz"), "--modality", "CT", "-o", out],
        "missing": ["to-case", str(tmp_path / "in" / "nothing.nii.gz"), "--modality", "CT", "-o", out],
        "geometry": ["to-case", image, "--labels", other_spacing, "--modality", "CT", "-o", out],
        "empty labels": ["to-case", image, "--labels", empty, "--modality", "CT", "-o", out],
        "boxes outside": ["to-case", image, "--boxes", str(tmp_path / "in" / "outside.json"), "--modality", "CT",
                          "-o", out],
        "world boxes outside": ["to-case", image, "--boxes", str(tmp_path / "in" / "world.json"), "--modality",
                                "CT", "-o", out],
        "bad window": ["to-case", image, "--modality", "CT", "--window", "forty", "-o", out],
        "no geometry": ["to-image", str(tmp_path / "in" / "3DBox_CT_lost.npz"), "-o", str(tmp_path / "out" / "x.nii")],
        "segs do not fit": ["to-image", str(tmp_path / "in" / "3DBox_CT_lost.npz"), "-o",
                            str(tmp_path / "out" / "x.nii"), "--reference", str(tmp_path / "in" / "2d.png")],
    }


@pytest.mark.parametrize("problem", ["unreadable", "missing", "geometry", "empty labels", "boxes outside",
                                     "world boxes outside", "bad window", "no geometry", "segs do not fit"])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, problem) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.uint8)), str(tmp_path / "2d.png"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "2d.png").write_bytes((tmp_path / "2d.png").read_bytes())
    argv = _bad_inputs(tmp_path)[problem]
    capsys.readouterr()
    assert convert_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert _files(tmp_path / "out") == []
    print(problem, "->", err[0])


def test_score_nifti_export_shares_the_writer(tmp_path) -> None:
    """seg-score --save-nii (evaluation/nifti.py) writes through convert.io: (z, y, x) arrays, (x, y, z) spacing."""
    from evaluation.nifti import save_nifti

    gts = np.zeros((5, 6, 7), np.uint8)
    gts[1:3, 2:4, 3:6] = 1
    np.savez(tmp_path / "3DBox_CT_a.npz", gts=gts, spacing=np.array([0.5, 0.6, 3.0]))
    (tmp_path / "segs").mkdir()
    np.savez(tmp_path / "segs" / "3DBox_CT_a.npz", segs=gts)
    written = save_nifti([{"case": "3DBox_CT_a.npz"}], tmp_path / "segs", tmp_path, tmp_path / "nii")
    assert [p.name for p in written] == ["3DBox_CT_a_gt.nii.gz", "3DBox_CT_a_seg.nii.gz"]
    image = sitk.ReadImage(str(written[0]))
    assert image.GetSize() == (7, 6, 5)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.6, 3.0), rtol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), gts)


def test_single_slice_volume_is_a_2d_case(tmp_path) -> None:
    """A one-slice volume (one DICOM file, a 2D NIfTI slice) gives a 2D case with its modality's rule,
    and to-image puts the label map back in the (x, y, 1) volume; a 0/255 mask keeps its 255."""
    hu, labels = _ct_and_labels()
    _write(hu[12:13], tmp_path / "slice.nii.gz")
    _write((labels[12:13] == 2).astype(np.uint8) * 255, tmp_path / "mask.nii.gz")
    assert convert_main(["to-case", str(tmp_path / "slice.nii.gz"), "--labels", str(tmp_path / "mask.nii.gz"),
                         "--modality", "CT", "-o", str(tmp_path / "out")]) == 0
    case = _npz(tmp_path / "out" / "imgs" / "2DBox_CT_slice.npz")
    assert case["imgs"].shape == (64, 64, 3) and "spacing" not in case
    np.testing.assert_array_equal(case["imgs"][:, :, 0], ct_window(hu[12], 40, 400))
    y, x = np.nonzero(labels[12] == 2)
    assert case["boxes"].tolist() == [[x.min(), y.min(), x.max(), y.max()]]
    assert convert_main(["to-image", str(tmp_path / "out" / "gts" / "2DBox_CT_slice.npz"), "-o",
                         str(tmp_path / "back.nii.gz")]) == 0
    back = sitk.ReadImage(str(tmp_path / "back.nii.gz"))
    assert back.GetSize() == (64, 64, 1)
    np.testing.assert_allclose(back.GetDirection(), DIRECTION, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), (labels[12:13] == 2) * 255)
