"""seg:latest's `serve` command (docker/serve.sh) driven by nninteractive-client, as the viewers drive it.

The image's seg-serve has its own blosc2 (docker/requirements-serve.txt, 3.x) while the client here has the
venv's (4.x): the test also checks that the two read each other's frames. Users publish the port with
`docker run -p 127.0.0.1:1527:1527 seg:latest serve`; this sandbox's daemon has no bridge, so the container
shares the host's network instead (it listens on 0.0.0.0, as with -p, on a free port, with an API key).
Skipped where no Docker daemon answers or seg:latest is not built (tests/conftest.py, `seg_image`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import dice, free_port

pytestmark = pytest.mark.docker

KEY = "docker-test-key"
SHAPE = (16, 64, 64)


def wait_healthy(url: str, container: Any, seconds: float = 120) -> None:
    """Until GET /healthz answers 200; fails with the container's log if it stops or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status not in ("created", "running") or time.monotonic() > deadline:
            log = container.logs().decode("utf-8", "replace")
            pytest.fail(f"seg-serve in the image did not start ({container.status}):\n{log[-3000:]}", pytrace=False)
        time.sleep(0.3)


def test_serve_in_the_image_answers_a_2d_box_with_the_3d_object(seg_image: str) -> None:
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    from tests.test_docker import CLIENT

    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ellipsoid = ((z - 8) / 5) ** 2 + ((y - 30) / 14) ** 2 + ((x - 34) / 12) ** 2 <= 1
    noise = np.random.default_rng(3).normal(0, 20, SHAPE)
    volume = (np.where(ellipsoid, 300.0, -400.0) + noise).astype(np.float32)[None]  # (1, D, H, W), CT in HU

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    container = CLIENT.containers.run(
        seg_image, ["serve", "--port", str(port), "--threads", "2", "--max-sessions", "1"],
        network_mode="host", mem_limit="8g", user="1234:1234", environment={"SEG_SERVE_API_KEY": KEY},
        detach=True,
    )  # fmt: skip
    try:
        wait_healthy(url, container)
        session = nnInteractiveRemoteInferenceSession(url, api_key=KEY)
        try:
            assert session.supported_interactions["bbox2d"] and not session.supported_interactions["points"]
            session.set_image(volume, {"spacing": [2.5, 0.8, 0.8]})
            buffer = np.zeros(SHAPE, np.uint8)
            session.set_target_buffer(buffer)
            changed = session.add_bbox_interaction([[8, 9], [14, 47], [20, 49]], include_interaction=True)
        finally:
            session.close()
        assert changed is not None and changed[0][0] < 8 < changed[0][1] - 1  # beyond the box's slice
        assert dice(buffer[8] > 0, ellipsoid[8]) > 0.9
        spanned = [k for k in range(SHAPE[0]) if ellipsoid[k].sum() >= 50]
        assert len(spanned) > 5
        for k in spanned:  # the 3D object, followed from the box's slice both ways
            assert dice(buffer[k] > 0, ellipsoid[k]) > 0.7, k
        log = container.logs().decode("utf-8", "replace")
        assert "WARNING" not in log, log  # a key was given
    finally:
        container.remove(force=True)
