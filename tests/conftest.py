"""Shared fixtures: the exported IR (never exported here), OpenCV, real demo data from the stardist wheel.

Tests are "integration" when they need the exported models, torch, NNCF, OpenCV, Docker, a wheel build or
the venv's console scripts (marked here by the fixtures they use, or by their module or themselves); the
rest are unit tests: `pytest -m "not integration"` (`./build.sh unit`) runs those in well under a minute,
without exporting anything, from a checkout and its runtime and test requirements: no OpenCV, torch or
NNCF is imported, no module marked integration as a whole is even collected, and the subprocesses they
start are `sys.executable` on the checkout's modules. `slow` marks what takes more than a minute (the Arm
image under emulation): `-m "not slow"` leaves it out of a full run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from models.registry import DEFAULT_MODEL_DIR, is_available

# A test that uses one of these fixtures needs the exported models (or, for cv2, OpenCV: a build-time
# dependency, the reference the runtime's numpy resize and distance transform are checked against).
INTEGRATION_FIXTURES = frozenset({"ir_dir", "litemedsam", "evit_ir_dir", "torch_baseline", "cv2"})
# A module that marks all its tests with one of these (its `pytestmark`) is integration as a whole.
WHOLE_MODULE_MARK = re.compile(r"^pytestmark = .*\bpytest\.mark\.(integration|docker)\b", re.MULTILINE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.integration)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m "not integration"` (the unit tier's expression), do not import the modules marked integration
    as a whole: all their tests would be deselected, and importing them imports torch, NNCF or the Docker SDK
    (seconds)."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if config.getoption("markexpr").strip() == "not integration" and WHOLE_MODULE_MARK.search(
            collection_path.read_text()):
        return True
    return None


@pytest.fixture(scope="session")
def ir_dir() -> Path:
    """models/ir with LiteMedSAM exported; fails with what to run when it is not (./build.sh test exports first)."""
    if not is_available("litemedsam", DEFAULT_MODEL_DIR):
        pytest.fail(f"LiteMedSAM is not exported in {DEFAULT_MODEL_DIR}: run ./build.sh export first", pytrace=False)
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def litemedsam(ir_dir):
    """One compiled LiteMedSAM predictor for the whole session (compiling costs seconds)."""
    from models.predictor import SamPredictor
    from models.registry import get_spec

    return SamPredictor.compile(get_spec("litemedsam"), ir_dir)


@pytest.fixture(scope="session")
def cv2():
    """opencv-python (requirements-build.txt): the reference some numpy code is checked against; a test that
    takes it is integration (the runtime and the unit tier do without OpenCV)."""
    import cv2

    return cv2


@pytest.fixture(scope="session")
def nuclei() -> tuple[np.ndarray, np.ndarray]:
    """Real fluorescence nuclei from the stardist wheel: (H, W, 3) uint8 image, (H, W) instance labels."""
    from sample_data.stardist import stardist_nuclei

    return stardist_nuclei()


@pytest.fixture(scope="module")
def seg_image() -> str:
    """The submission image's tag (SEG_TEST_IMAGE or seg:latest); skips where it is not built or no daemon answers."""
    import docker
    from tests.test_docker import CLIENT, SEG_IMAGE  # skips where no Docker daemon answers

    try:
        CLIENT.images.get(SEG_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{SEG_IMAGE} is not built (./build.sh image)")
    return SEG_IMAGE
