"""seg-serve end to end: a real `python -m serve` on a free 127.0.0.1 port with the exported LiteMedSAM,
driven through nninteractive-client's own session class, as napari-nninteractive and SlicerNNInteractive
drive it. Needs the exported models (integration); tests/test_serve_units.py covers the protocol without them."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from nnInteractive.inference.remote import (
    ServerAtCapacityError,
    SessionExpiredError,
    nnInteractiveRemoteInferenceSession,
)
from nnInteractive.inference.remote.serialization import pack_array

from tests.helpers import ROOT, dice, free_port

pytestmark = pytest.mark.integration

KEY = "test-key"
SHAPE = (16, 64, 64)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def start(log: Path, *options: str) -> Server:
    port = free_port()
    handle = log.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port), "--threads", "2", *options],
                               cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    return Server(process, f"http://127.0.0.1:{port}", log)


def wait_up(server: Server, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not server.healthy():
        if server.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"seg-serve did not start:\n{server.log.read_text()[-3000:]}", pytrace=False)
        time.sleep(0.2)


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def servers(ir_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """The server under test (a key, one session at most) and one whose leases expire after 2 s idle;
    started together, so their models compile at once."""
    logs = tmp_path_factory.mktemp("serve")
    main = start(logs / "main.log", "--api-key", KEY, "--max-sessions", "1", "--max-body-mb", "8")
    short = start(logs / "short.log", "--idle-timeout", "2", "--liveness-timeout", "30", "--max-sessions", "1")
    try:
        wait_up(main)
        wait_up(short)
        yield main, short
    finally:
        stop(main)
        stop(short)


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CT-like (1, 16, 64, 64) float32 volume in HU: a bright ellipsoid (the object: z 3..13, y 16..44,
    x 22..46) and a bright cube (z 2..6, y 50..59, x 4..13) in a dark, noisy background; their bool masks."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ellipsoid = ((z - 8) / 5) ** 2 + ((y - 30) / 14) ** 2 + ((x - 34) / 12) ** 2 <= 1
    cube = np.zeros(SHAPE, bool)
    cube[2:7, 50:60, 4:14] = True
    noise = np.random.default_rng(7).normal(0, 20, SHAPE)
    volume = np.where(ellipsoid | cube, 300.0, -400.0) + noise
    return volume.astype(np.float32)[None], ellipsoid, cube


@pytest.fixture()
def session(servers: tuple[Server, Server]) -> Iterator[nnInteractiveRemoteInferenceSession]:
    client = nnInteractiveRemoteInferenceSession(servers[0].url, api_key=KEY)
    yield client
    client.close()


def loaded(session: nnInteractiveRemoteInferenceSession) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene uploaded, and the client's target buffer (zeros), the ellipsoid and the cube."""
    volume, ellipsoid, cube = scene()
    session.set_image(volume, {"spacing": [2.5, 0.8, 0.8]})
    buffer = np.zeros(SHAPE, np.uint8)
    session.set_target_buffer(buffer)
    return buffer, ellipsoid, cube


def test_a_2d_box_returns_the_object_on_the_slices_it_spans(session: nnInteractiveRemoteInferenceSession) -> None:
    assert session.supported_interactions["bbox2d"] and session.supported_interactions["bbox3d"]
    assert not any(session.supported_interactions[kind] for kind in ("points", "scribble", "lasso"))
    buffer, ellipsoid, _ = loaded(session)
    # A 2D box on slice 8 (axis 0 of extent 1) around the ellipsoid's cross-section.
    changed = session.add_bbox_interaction([[8, 9], [14, 47], [20, 49]], include_interaction=True)
    assert changed is not None and changed[0][0] <= 8 < changed[0][1]
    assert dice(buffer[8] > 0, ellipsoid[8]) > 0.9
    assert not (buffer > 0)[:, 48:, :16].any()  # nothing of the cube, which the box never touched
    spanned = [z for z in range(SHAPE[0]) if ellipsoid[z].sum() >= 50]  # the slices the object spans visibly
    for z in spanned:
        assert dice(buffer[z] > 0, ellipsoid[z]) > 0.7, z
    # the same box drawn in the sagittal view (axis 2 of extent 1, through x = 34)
    session.reset_interactions()
    session.add_bbox_interaction([[2, 15], [14, 47], [34, 35]], include_interaction=True)
    assert dice(buffer[:, :, 34] > 0, ellipsoid[:, :, 34]) > 0.85 and dice(buffer > 0, ellipsoid) > 0.7


def test_negative_box_undo_3d_box_and_initial_segmentation(session: nnInteractiveRemoteInferenceSession) -> None:
    buffer, ellipsoid, cube = loaded(session)
    session.add_bbox_interaction([[8, 9], [14, 47], [20, 49]], include_interaction=True)
    before_negative = buffer.copy()
    assert (before_negative[:, :, :30] > 0).sum() > 50

    # A negative box over the ellipsoid's left part on the same slice: that part goes (on the slice, and
    # on the slices its object is followed to), the rest stays.
    session.add_bbox_interaction([[8, 9], [14, 47], [20, 33]], include_interaction=False)
    assert (buffer[8, :, :30] > 0).sum() < 0.2 * (before_negative[8, :, :30] > 0).sum()
    assert (buffer[:, :, :30] > 0).sum() < 0.7 * (before_negative[:, :, :30] > 0).sum()
    assert (buffer[:, :, 38:] > 0).sum() > 0.8 * (before_negative[:, :, 38:] > 0).sum()
    assert session.undo() and np.array_equal(buffer, before_negative)

    # A 3D box (extent > 1 on every axis) runs the route's 3D strategy inside it.
    session.reset_interactions()
    assert not buffer.any()
    session.add_bbox_interaction([[3, 14], [15, 46], [21, 48]], include_interaction=True)
    assert dice(buffer > 0, ellipsoid) > 0.75

    # An initial segmentation is kept and edited by later boxes: a box on the cube adds it.
    session.reset_interactions()
    session.add_initial_seg_interaction(ellipsoid.astype(np.uint8))
    assert np.array_equal(buffer, ellipsoid)
    session.add_bbox_interaction([[4, 5], [48, 62], [2, 16]], include_interaction=True)
    assert buffer[ellipsoid].all()
    assert dice(buffer[4] > 0, ellipsoid[4] | cube[4]) > 0.85
    assert session.undo() and np.array_equal(buffer, ellipsoid)


def test_one_session_at_most_a_key_and_bad_frames_refused_and_still_serving(
        servers: tuple[Server, Server], session: nnInteractiveRemoteInferenceSession) -> None:
    main = servers[0]
    with pytest.raises(ServerAtCapacityError):
        nnInteractiveRemoteInferenceSession(main.url, api_key=KEY)
    with pytest.raises(httpx.HTTPStatusError) as wrong:
        nnInteractiveRemoteInferenceSession(main.url, api_key="not-the-key")
    assert wrong.value.response.status_code == 401

    headers = {"Authorization": f"Bearer {KEY}", "X-Lease-Token": str(session._lease_token),
               "Content-Type": "application/octet-stream", "X-Meta": json.dumps({"image_properties": {}})}
    volume, _, _ = scene()
    good = pack_array(volume)
    malformed = httpx.post(main.url + "/set_image", content=good[: len(good) // 2], headers=headers)
    assert malformed.status_code == 400 and "\n" not in malformed.json()["detail"]
    name = b"float32"  # a header claiming a (1, 1000, 5000, 2500) float32 volume: 50 GB
    claims_50_gb = (struct.pack("<4sBBBB", b"NNIA", 1, 1, 4, len(name)) + name
                    + struct.pack("<4q", 1, 1000, 5000, 2500) + struct.pack("<I", 0))
    too_large = httpx.post(main.url + "/set_image", content=claims_50_gb, headers=headers)
    assert too_large.status_code == 413, too_large.text
    oversized_body = httpx.post(main.url + "/set_image", content=bytes(9 << 20), headers=headers, timeout=60)
    assert oversized_body.status_code == 413
    assert main.healthy()
    session.set_image(volume)  # the session still works
    session.set_target_buffer(np.zeros(SHAPE, np.uint8))
    with pytest.raises(httpx.HTTPStatusError) as outside:
        session.add_bbox_interaction([[8, 9], [70, 90], [0, 10]], include_interaction=True)
    assert outside.value.response.status_code == 400


def test_an_idle_lease_expires_with_410(servers: tuple[Server, Server]) -> None:
    short = servers[1]
    client = nnInteractiveRemoteInferenceSession(short.url)
    try:
        client.set_image(scene()[0])
        time.sleep(3.5)  # the 2 s idle timeout, with margin; the client's heartbeats do not postpone it
        with pytest.raises(SessionExpiredError):
            client.set_target_buffer(np.zeros(SHAPE, np.uint8))
        nnInteractiveRemoteInferenceSession(short.url).close()  # its slot is free again
    finally:
        client.close()


def test_slices_are_encoded_in_the_background_middle_first_and_boxes_reuse_them(ir_dir: Path) -> None:
    """After set_image the axial slices' embeddings fill the session's cache, nearest the middle first; a box
    then encodes nothing more."""
    from router.pipeline import RunConfig
    from serve.boxes import parse_box
    from serve.engine import AXIAL, ModelEngine, middle_out
    from serve.intensity import volume_to_uint8

    segmenter = RunConfig.of(models=ir_dir, threads=2).segmenter()
    engine = ModelEngine(segmenter.table, segmenter.pool)
    volume, ellipsoid, _ = scene()
    opened = engine.open_volume(volume_to_uint8(volume[0]), "CT")
    try:
        assert opened.encoder is not None
        opened.encoder.join(120)
        assert len(opened.cache) == SHAPE[0]
        assert middle_out(SHAPE[0])[:3] == [7, 8, 6]
        model = segmenter.pool.get(opened.route.model)
        calls = model.encoder_calls
        mask = engine.object_of(opened, parse_box([[8, 9], [14, 47], [20, 49]], SHAPE))
        assert dice(mask[8], ellipsoid[8]) > 0.9
        assert model.encoder_calls == calls and (0, (AXIAL, 8)) in opened.cache
    finally:
        opened.close()


def test_a_2d_boxs_two_sweeps_run_at_once_on_two_decoder_streams(ir_dir: Path) -> None:
    """On two threads the engine decodes a 2D box's sweep towards slice 0 on a second stream of a decoder
    compiled with two, while the other sweep runs on the first: the object is the one the sweeps give one
    after the other on the shared model (Dice, not identity: the streams have one thread each, and a kernel
    may sum in another order on fewer threads)."""
    from router.pipeline import RunConfig
    from serve.boxes import parse_box
    from serve.engine import ModelEngine
    from serve.intensity import volume_to_uint8

    segmenter = RunConfig.of(models=ir_dir, threads=2).segmenter()
    engine = ModelEngine(segmenter.table, segmenter.pool, background=False)
    engine.warm("CT")
    volume, ellipsoid, _ = scene()
    opened = engine.open_volume(volume_to_uint8(volume[0]), "CT")
    try:
        seats = engine.sweep_seats(opened.route)
        assert seats is not None and seats[0].predictor.model is seats[1].predictor.model
        assert int(seats[0].predictor.model.decoder.get_property("NUM_STREAMS")) == 2
        box = parse_box([[8, 9], [14, 47], [20, 49]], SHAPE)
        at_once = engine.object_of(opened, box)
        down_calls = seats[1].predictor.decoder_calls
        assert seats[0].predictor.decoder_calls > 0 and down_calls > 0
        engine._sweep_seats[opened.route.model] = None  # one after the other, on the shared model
        in_turn = engine.object_of(opened, box)
        assert seats[1].predictor.decoder_calls == down_calls
        assert dice(at_once, in_turn) > 0.99 and dice(at_once, ellipsoid) > 0.8
        assert np.array_equal(np.flatnonzero(at_once.any(axis=(1, 2))), np.flatnonzero(in_turn.any(axis=(1, 2))))
    finally:
        opened.close()
