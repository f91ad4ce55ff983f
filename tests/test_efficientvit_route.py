"""The EfficientViT-SAM route end to end (random weights: the official checkpoints are not reachable here)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import predict
from models.boxes import boxes_from_labels
from models.registry import get_spec
from models.transforms import IMAGENET_MEAN, IMAGENET_STD, postprocess_masks, preprocess, scale_boxes
from tests.helpers import write_case


def link_litemedsam_ir(ir_dir, out) -> None:
    """Make `out` hold the FP32 LiteMedSAM IR (symlinks): the fallback model every run needs."""
    spec = get_spec("litemedsam")
    for name in (spec.encoder_file, spec.decoder_file):
        for suffix in (".xml", ".bin"):
            os.symlink(ir_dir / name.replace(".xml", suffix), out / name.replace(".xml", suffix))


@pytest.fixture(scope="module")
def evit_ir_dir(tmp_path_factory, ir_dir):
    from models.export.efficientvit_sam import export_efficientvit_sam

    out = tmp_path_factory.mktemp("ir")
    export_efficientvit_sam("l0", None, out)
    link_litemedsam_ir(ir_dir, out)
    return out


def test_microscopy_routes_to_efficientvit_when_built(evit_ir_dir, nuclei, tmp_path, capsys):
    image, labels = nuclei
    crop, crop_labels = image[:200, :300], labels[:200, :300]
    present = [v for v in np.unique(crop_labels) if v]
    relabelled = np.searchsorted(present, crop_labels) + 1
    relabelled[crop_labels == 0] = 0
    boxes = boxes_from_labels(relabelled)[:12]
    write_case(tmp_path / "in" / "2DBox_Microscope_evit.npz", imgs=crop, boxes=boxes)
    write_case(tmp_path / "in" / "2DBox_Endoscopy_lite.npz", imgs=crop, boxes=boxes[:2])
    status = predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--models", str(evit_ir_dir),
                           "--no-progress"])
    err = capsys.readouterr().err
    assert status == 0, err
    evit_line = next(line for line in err.splitlines() if line.startswith("2DBox_Microscope_evit"))
    assert "route=efficientvit_sam_l0/image2d" in evit_line and "fell back" not in err
    summary = next(line for line in err.splitlines() if line.startswith("2DBox_Endoscopy_lite"))
    assert "route=litemedsam/image2d" in summary
    with np.load(tmp_path / "out" / "2DBox_Microscope_evit.npz") as npz:
        assert npz["segs"].shape == (200, 300) and npz["segs"].dtype == np.uint8


def test_fallback_is_loud_when_not_built(ir_dir, nuclei, tmp_path, capsys):
    image, labels = nuclei
    write_case(tmp_path / "in" / "2DBox_X-Ray_a.npz", imgs=image[:64, :64], boxes=np.array([[5, 5, 40, 40]]))
    write_case(tmp_path / "in" / "2DBox_X-Ray_b.npz", imgs=image[:64, :64], boxes=np.array([[5, 5, 40, 40]]))
    only_lite = tmp_path / "ir"
    only_lite.mkdir()
    link_litemedsam_ir(ir_dir, only_lite)
    assert predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--models", str(only_lite),
                         "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING: efficientvit_sam_l0 not built, fell back to litemedsam") == 1  # once per run
    summaries = [line for line in err.splitlines() if line.startswith("2DBox_X-Ray_")]
    assert len(summaries) == 2 and all("fell back to litemedsam" in line for line in summaries)


def test_efficientvit_preprocessing_is_its_own():
    """512 input with ImageNet mean/std on 0-255 values, zero pad AFTER normalising, 1024 box frame."""
    spec = get_spec("efficientvit_sam_l0")
    image = np.full((300, 400, 3), 200, np.uint8)
    tensor, resized_hw = preprocess(image, spec)
    assert tensor.shape == (1, 3, 512, 512) and resized_hw == (384, 512)
    np.testing.assert_allclose(tensor[0, :, 0, 0], (200 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)
    assert np.all(tensor[0, :, 384:, :] == 0)
    boxes = scale_boxes(np.array([[0, 0, 399, 299]]), (300, 400), spec)
    np.testing.assert_allclose(boxes, [[0, 0, 399 * 1024 / 400, 299 * 768 / 300]], rtol=1e-6)
    lite = get_spec("litemedsam")
    tensor, _ = preprocess(image, lite)
    assert tensor.shape == (1, 3, 256, 256) and tensor.max() <= 1.0
    assert scale_boxes(np.array([[0, 0, 399, 299]]), (300, 400), lite).tolist() == [[0, 0, 255, 191]]


def test_efficientvit_masks_go_up_to_the_1024_frame_before_cropping():
    spec = get_spec("efficientvit_sam_l0")
    logits = -np.ones((1, 1, 256, 256), np.float32)
    logits[0, 0, :96, :128] = 1.0  # the unpadded area of a 300x400 image is 768x1024 in the frame = 192x256 here
    masks = postprocess_masks(logits, (300, 400), spec)
    assert masks.shape == (1, 300, 400)
    assert abs(masks[0].mean() - 0.25) < 0.01  # a quarter of the unpadded area
