"""OpenVINO's compiled-model cache (predict.py --ov-cache, $SEG_OV_CACHE_DIR): used when it fits, and never a
cause of different results when it is stale, foreign or broken.

Each OpenVINO version, CPU (brand string and flags) and compile configuration has its own subfolder
(models.compiled.cache_key), so a blob made for another is never looked up; within one, the tests put
another model's blob under the name looked up (an older export), overwrite blobs with noise and truncate
them: each time the masks and embeddings must equal those of a predictor compiled without any cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.predictor import SamPredictor
from models.registry import get_spec
from predict import main

SPEC = get_spec("litemedsam")


def disc_image() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:300, :420]
    image = np.where((rows - 150) ** 2 + (cols - 200) ** 2 < 70**2, 200, 40).astype(np.uint8)
    image = np.repeat(image[:, :, None], 3, axis=2)
    return image, np.array([[120, 70, 280, 230], [10, 10, 100, 90]])


def masks(ir_dir: Path, ov_cache: Path | None) -> tuple[np.ndarray, np.ndarray, SamPredictor]:
    predictor = SamPredictor.compile(SPEC, ir_dir, threads=2, precision="fp32", ov_cache=ov_cache)
    image, boxes = disc_image()
    predictor.set_image(image)
    features = predictor.encode(image).features
    return predictor.predict(boxes), features, predictor


def loaded_from_cache(predictor: SamPredictor) -> bool:
    return bool(predictor.model.encoder.get_property("LOADED_FROM_CACHE"))


@pytest.fixture(scope="module")
def reference(ir_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    found, features, _ = masks(ir_dir, None)
    assert found[0].sum() > 1000  # the disc is found
    return found, features


def test_cache_is_filled_then_used_with_equal_results(ir_dir: Path, tmp_path: Path, reference) -> None:
    cache = tmp_path / "ov"  # made by OpenVINO
    first, features, predictor = masks(ir_dir, cache)
    assert not loaded_from_cache(predictor)
    assert len(blob_files(cache)) == 2  # encoder and decoder
    second, features_again, predictor = masks(ir_dir, cache)
    assert loaded_from_cache(predictor)
    for found, embedding in ((first, features), (second, features_again)):
        assert np.array_equal(found, reference[0]) and np.array_equal(embedding, reference[1])


def blob_files(cache: Path) -> list[Path]:
    """The blobs under a user's cache folder (one subfolder per configuration), smallest first."""
    return sorted(cache.glob("*/*.blob"), key=lambda path: path.stat().st_size)


@pytest.mark.parametrize("damage", ["noise", "truncated", "other_model"])
def test_a_broken_or_stale_cache_changes_nothing(ir_dir: Path, tmp_path: Path, reference, damage: str) -> None:
    cache = tmp_path / "ov"
    masks(ir_dir, cache)
    blobs = blob_files(cache)  # decoder, encoder
    assert len(blobs) == 2
    if damage == "noise":
        for blob in blobs:
            blob.write_bytes(np.random.default_rng(0).bytes(blob.stat().st_size))
    elif damage == "truncated":
        for blob in blobs:
            blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])
    else:  # each model's blob under the other's name: what an older export of a model leaves behind
        decoder, encoder = (blob.read_bytes() for blob in blobs)
        blobs[0].write_bytes(encoder)
        blobs[1].write_bytes(decoder)
    found, features, predictor = masks(ir_dir, cache)
    assert not loaded_from_cache(predictor)
    assert np.array_equal(found, reference[0]) and np.array_equal(features, reference[1])


def test_other_configurations_and_cpus_never_share_blobs(ir_dir: Path, tmp_path: Path, reference) -> None:
    """OpenVINO gives a blob made with other properties the same name (measured), so each configuration,
    OpenVINO version and CPU (brand and flags) has its own subfolder: no blob made for another is looked up."""
    import openvino as ov

    from models.compiled import cache_key, compile_config

    core = ov.Core()
    keys = {cache_key(core, compile_config(threads, precision))
            for threads in (1, 2, None) for precision in ("fp32", "bf16", "int8")}
    assert len(keys) == 6  # int8 computes its float parts in f32: the encoder file differs, not the config
    cache = tmp_path / "ov"
    masks(ir_dir, cache)
    SamPredictor.compile(SPEC, ir_dir, threads=1, precision="bf16", ov_cache=cache)
    folders = sorted(path.name for path in cache.iterdir())
    assert len(folders) == 2 and all(len(list((cache / name).glob("*.blob"))) == 2 for name in folders)
    found, features, predictor = masks(ir_dir, cache)
    assert loaded_from_cache(predictor)
    assert np.array_equal(found, reference[0]) and np.array_equal(features, reference[1])


def test_unwritable_cache_is_no_error(ir_dir: Path, tmp_path: Path, reference) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    found, _, _ = masks(ir_dir, blocked / "ov")
    assert np.array_equal(found, reference[0])


def test_predict_ov_cache_option(ir_dir: Path, tmp_path: Path) -> None:
    image, boxes = disc_image()
    inputs, cache = tmp_path / "in", tmp_path / "cache"
    inputs.mkdir()
    np.savez(inputs / "2DBox_US_disc.npz", imgs=image, boxes=boxes)
    outputs = [tmp_path / "out0", tmp_path / "out1"]
    for output in outputs:
        assert main(["-i", str(inputs), "-o", str(output), "--ov-cache", str(cache), "--no-progress"]) == 0
    assert len(blob_files(cache)) == 2
    segs = [np.load(output / "2DBox_US_disc.npz")["segs"] for output in outputs]
    assert np.array_equal(segs[0], segs[1]) and segs[0].max() == 2
