"""seg:latest under a small `docker run -m`: a bomb before a good case, a case that fits only with smaller
decoder batches, `docker stop` mid-run. Skipped without a Docker daemon or the image (tests/test_docker.py);
SEG_TEST_IMAGE names another image to test (default seg:latest)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import blob_volume, tight_box3d, write_case
from tests.test_docker import CLIENT, open_folders  # skips this module where no daemon answers

pytestmark = pytest.mark.docker

def start(image: str, inputs: Path, outputs: Path, memory: str) -> Any:
    """docker run -d --network none -m MEMORY (no swap) --user 1234:1234 -v inputs -v outputs IMAGE."""
    open_folders(inputs, outputs)
    return CLIENT.containers.run(image, None, detach=True, network_mode="none", mem_limit=memory,
                                 memswap_limit=memory, user="1234:1234", volumes={
                                     str(inputs): {"bind": "/workspace/inputs", "mode": "ro"},
                                     str(outputs): {"bind": "/workspace/outputs", "mode": "rw"}})


def finish(container: Any, timeout: float = 600) -> tuple[int, str]:
    try:
        status = int(container.wait(timeout=timeout)["StatusCode"])
        return status, container.logs().decode("utf-8", "replace")
    finally:
        container.remove(force=True)


def good_volume(path: Path) -> None:
    volume, mask = blob_volume(shape=(12, 64, 64), centre=(6, 30, 32), radii=(3, 12, 10))
    write_case(path, imgs=volume, boxes=tight_box3d(mask)[None], spacing=np.array([1.0, 1.0, 3.0]))


def test_bomb_before_a_good_case_under_1g(seg_image, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    # 1.2 GiB of zeros in a ~1 MB file, sorted first: without the guard the container is killed (137)
    # and the good case after it is never segmented.
    inputs.mkdir()
    bomb = np.zeros((1200, 1024, 1024), np.uint8)
    np.savez_compressed(inputs / "3DBox_CT_abomb.npz", imgs=bomb, boxes=np.array([[1, 1, 1, 9, 9, 9]]))
    del bomb
    assert (inputs / "3DBox_CT_abomb.npz").stat().st_size < 10 << 20
    good_volume(inputs / "3DBox_CT_good.npz")
    status, log = finish(start(seg_image, inputs, outputs, "1g"))
    assert status == 1, log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 3DBox_CT_abomb.npz: needs "), log
    assert " GiB available" in errors[0]
    assert (outputs / "3DBox_CT_good.npz").is_file() and not (outputs / "3DBox_CT_abomb.npz").exists()


def test_case_over_the_limit_runs_with_smaller_decoder_batches(seg_image, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    boxes = np.array([[x, y, x + 20, y + 20] for y in range(8, 220, 40) for x in range(8, 220, 40)])[:30]
    write_case(inputs / "2DBox_Endoscopy_many.npz", imgs=rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
               boxes=boxes)
    status, log = finish(start(seg_image, inputs, outputs, "900m"))
    assert status == 0, log
    assert "2DBox_Endoscopy_many.npz: decoding " in log and "boxes at a time to fit in memory" in log, log
    with np.load(outputs / "2DBox_Endoscopy_many.npz") as npz:
        assert npz["segs"].shape == (256, 256)


def test_docker_stop_mid_run(seg_image, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    good_volume(inputs / "3DBox_CT_a.npz")
    for index in range(4):
        volume, mask = blob_volume(shape=(24, 96, 96), seed=index)
        write_case(inputs / f"3DBox_MR_{index}.npz", imgs=volume, boxes=tight_box3d(mask)[None])
    container = start(seg_image, inputs, outputs, "2g")
    deadline = time.monotonic() + 300
    while not (outputs / "3DBox_CT_a.npz").exists():
        assert time.monotonic() < deadline, container.logs().decode()
        time.sleep(0.05)
    container.stop(timeout=30)  # SIGTERM to PID 1 (python), SIGKILL only after 30 s
    status, log = finish(container)
    assert status == 143, log
    assert "stopped by SIGTERM" in log.strip().splitlines()[-1], log
    assert not [p.name for p in outputs.iterdir() if p.name.startswith(".")]
    assert (outputs / "efficiency.csv").read_text().startswith("case,seconds\n3DBox_CT_a,")
