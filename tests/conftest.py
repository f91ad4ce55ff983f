"""Shared fixtures: the exported IR (never exported here), real demo data from the stardist wheel.

Tests are "integration" when they need the exported models, torch, NNCF or Docker (marked here by the
fixtures they use, or by their module); the rest are unit tests: `pytest -m "not integration"`
(`./build.sh unit`) runs those in well under a minute without exporting anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.registry import DEFAULT_MODEL_DIR, is_available

# A test that uses one of these fixtures needs the exported models.
MODEL_FIXTURES = frozenset({"ir_dir", "litemedsam", "evit_ir_dir", "torch_baseline"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.integration)


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

    return SamPredictor(get_spec("litemedsam"), ir_dir)


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
