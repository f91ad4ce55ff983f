"""The linux/arm64 image (seg:arm64, `./build.sh image --platform linux/arm64`), run on this x86 machine under
QEMU user-mode emulation: it is an arm64 image, it takes Arm's precision deliberately, and it segments as the
amd64 image does within a bound for rounding.

Emulation is slow (89 s per encoder pass on 2 AMD cores, 150-300 s on CI's 2 Intel cores: docs/results.md, "The
Arm image"), so the cases are the smallest that still go through the 2D and the 3D (propagate) strategies: one
encoder pass each. Skipped where no Docker daemon answers or the image is not built (`./build.sh test` builds it,
as root).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.agreement import agreement
from tests.helpers import blob_volume, tight_box3d, write_case
from tests.test_docker import CLIENT, open_folders, run_container

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ARM_IMAGE = os.environ.get("SEG_TEST_ARM_IMAGE", "seg:arm64")
AMD64_IMAGE = os.environ.get("SEG_TEST_IMAGE", "seg:latest")
# The emulated CPU: a Neoverse N1 (ARMv8.2 with FP16, no SVE), the class of Apple's M-series and Graviton 2.
# Under QEMU 7.2's default "max" CPU (SVE) the fp32 encoder's output departs from x86's (correlation 0.64; the
# decoder agrees to 4e-4 on the same embedding), so that CPU is not the one to compare on (docs/results.md,
# "The Arm image").
QEMU_CPU = "neoverse-n1"
# Arm's kernels sum in another order than x86's, so masks may differ at their edges. Bound: every object's DSC
# between the two images, and the share of its voxels (union of both masks) that differ. Measured (same
# section): fp32 on the Neoverse N1 gave x86's masks to the voxel on these cases (embedding within 4e-6), f16
# stayed at DSC >= 0.976 and <= 4.6% differing on the dev images; the "max" CPU's broken encoder gave 0.89.
ARM_MIN_DSC = 0.98
ARM_MAX_DIFFERING = 0.04


def _image_or_skip(tag: str) -> None:
    import docker

    try:
        CLIENT.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{tag} is not built (./build.sh image --platform ...)")


@pytest.fixture(scope="module")
def arm_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2D case with one box, and a 3D CT of 5 slices with one object on its middle slice only: one encoder pass
    each (the propagate strategy encodes the slices of a box's z range, here one; an object over 3 slices cost
    3 passes, about 10 minutes emulated)."""
    folder = tmp_path_factory.mktemp("arm_cases")
    rng = np.random.default_rng(7)
    image = rng.integers(0, 60, (72, 96, 3), dtype=np.uint8)
    image[20:44, 30:70] = 220
    write_case(folder / "2DBox_Endoscopy_a1.npz", imgs=image, boxes=np.array([[28, 18, 71, 45]]))
    volume, mask = blob_volume(shape=(5, 64, 64), centre=(2, 30, 32), radii=(0.5, 12, 10))  # z radius < 1: slice 2 only
    write_case(folder / "3DBox_CT_a2.npz", imgs=volume, boxes=tight_box3d(mask)[None],
               spacing=np.array([0.8, 0.8, 2.5]))
    return folder


def test_arm64_image_is_an_arm64_image() -> None:
    _image_or_skip(ARM_IMAGE)
    attributes = CLIENT.images.get(ARM_IMAGE).attrs
    assert (attributes["Os"], attributes["Architecture"]) == ("linux", "arm64")


def test_arm64_image_segments_as_the_amd64_image_does(arm_cases: Path, tmp_path: Path) -> None:
    _image_or_skip(ARM_IMAGE)
    _image_or_skip(AMD64_IMAGE)
    arm_out, amd64_out = tmp_path / "arm64", tmp_path / "amd64"
    open_folders(arm_cases, arm_out, amd64_out)
    status, arm_log = run_container(ARM_IMAGE, arm_cases, arm_out, platform="linux/arm64", timeout=3600,
                                    environment={"QEMU_CPU": QEMU_CPU})
    assert status == 0, arm_log
    assert "precision auto:" in arm_log and "on Arm" in arm_log, arm_log  # Arm's class, not the host's x86 flags
    status, log = run_container(AMD64_IMAGE, arm_cases, amd64_out,
                                ["sh", "predict.sh", "--precision", "fp32"], platform="linux/amd64")
    assert status == 0, log
    for case in sorted(arm_cases.glob("*.npz")):
        amd64 = np.load(amd64_out / case.name)["segs"]
        assert amd64.any(), f"{case.name}: the amd64 image found nothing to compare with"
        for row in agreement(np.load(arm_out / case.name)["segs"], amd64, case.name):
            assert row.dsc >= ARM_MIN_DSC and row.share <= ARM_MAX_DIFFERING, row
