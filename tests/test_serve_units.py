"""seg-serve without the models (unit tier): frames, boxes, intensities, leases, sessions, and the whole
protocol through nninteractive-client's own session class against the app served in this process on
127.0.0.1, with a stand-in engine (bright voxels in the box) instead of the models. tests/test_serve.py
drives the real server with the models."""

from __future__ import annotations

import ast
import importlib
import json
import socket
import struct
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from router.validation import to_uint8
from serve import frames
from serve.app import Limits, ServerConfig, make_app
from serve.boxes import BoxPrompt, parse_box, plane_box, volume_box
from serve.cli import exposure_warning, is_loopback
from serve.cli import main as cli_main
from serve.intensity import volume_to_uint8
from serve.leases import LeaseTable
from serve.protocol import ProtocolError, capabilities
from serve.session import Session
from tests.helpers import ROOT

KEY = "unit-key"


def _client_modules() -> tuple[object, object]:
    """nninteractive-client's session and serialization modules, imported without torch: the client imports
    torch where it can (for torch target buffers), and the unit tier imports no torch. Where torch is
    already loaded, nothing changes."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # `import torch` now fails: the client goes on without
    try:
        return (importlib.import_module("nnInteractive.inference.remote"),
                importlib.import_module("nnInteractive.inference.remote.serialization"))
    finally:
        if blocked:
            del sys.modules["torch"]


_remote, _serialization = _client_modules()
nnInteractiveRemoteInferenceSession = _remote.nnInteractiveRemoteInferenceSession
ServerAtCapacityError = _remote.ServerAtCapacityError
SessionExpiredError = _remote.SessionExpiredError
pack_array = _serialization.pack_array
unpack_array = _serialization.unpack_array


def ellipsoid(shape: tuple[int, int, int] = (16, 64, 64)) -> np.ndarray:
    """(D, H, W) bool: an ellipsoid around the middle, 10 x 28 x 24 voxels across."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - 8) / 5) ** 2 + ((y - 30) / 14) ** 2 + ((x - 34) / 12) ** 2 <= 1


def ct_volume(mask: np.ndarray) -> np.ndarray:
    """A CT-like (1, D, H, W) float32 volume: the object at 900 HU in -500 HU, as a viewer uploads it."""
    return np.where(mask, 900.0, -500.0).astype(np.float32)[None]


class FakeVolume:
    def __init__(self, volume: np.ndarray) -> None:
        self.volume: np.ndarray | None = volume

    def close(self) -> None:
        self.volume = None


class FakeEngine:
    """Stands in for serve.engine.ModelEngine: a box's object is its bright voxels (> 128 once in uint8)
    within the box's rectangle, on every slice for a 2D box (propagation), inside the box for a 3D box."""

    def __init__(self) -> None:
        self.boxes: list[BoxPrompt] = []

    def check_image(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if np.prod(shape, dtype=object) * dtype.itemsize > 1 << 30:
            raise ProtocolError(507, "image needs more memory than this test allows")

    def open_volume(self, volume: np.ndarray, modality: str) -> FakeVolume:
        return FakeVolume(volume)

    def object_of(self, handle: FakeVolume, box: BoxPrompt) -> np.ndarray:
        assert handle.volume is not None
        self.boxes.append(box)
        window = list(box.slicer())
        axis = box.slice_axis(handle.volume.shape)
        if axis is not None:
            window[axis] = slice(None)
        mask = np.zeros(handle.volume.shape, bool)
        mask[tuple(window)] = handle.volume[tuple(window)] > 128
        return mask


# ---- frames ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64", "bool", "uint16"])
def test_frames_read_the_clients_and_the_client_reads_ours(dtype: str) -> None:
    rng = np.random.default_rng(1)
    array = (rng.random((2, 5, 6, 7)) * 200).astype(dtype)
    assert np.array_equal(frames.unpack(pack_array(array), 1 << 20), array)
    assert np.array_equal(unpack_array(frames.pack(array)), array)
    zeros = np.zeros((3, 5, 7), dtype)  # the all-zero chunk the client warns of
    assert np.array_equal(unpack_array(frames.pack(zeros)), zeros)


def forged_header(shape: tuple[int, ...], dtype: str = "float32", magic: bytes = b"NNIA") -> bytes:
    name = dtype.encode()
    return (struct.pack("<4sBBBB", magic, 1, 1, len(shape), len(name)) + name
            + struct.pack(f"<{len(shape)}q", *shape))


def test_a_frame_claiming_50_gb_is_refused_before_allocating() -> None:
    frame = forged_header((1, 1000, 5000, 2500)) + struct.pack("<I", 1) + struct.pack("<QQ", 1 << 30, 10) + bytes(10)
    tracemalloc.start()
    with pytest.raises(frames.FrameTooLarge, match="50000000000 bytes"):
        frames.unpack(frame, 16 << 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize(("frame", "message"), [
    (b"NNI", "too short"),
    (forged_header((2, 2), magic=b"XXXX") + bytes(4), "not an NNIA"),
    (forged_header((2, 2), dtype="object") + bytes(4), "unsupported dtype"),
    (forged_header((2, 2), dtype="complex128") + bytes(4), "unsupported dtype"),
    (forged_header((2, -2)) + bytes(4), "negative"),
    (forged_header((2, 2)), "truncated"),
    (forged_header((2, 2)) + struct.pack("<I", 1) + struct.pack("<QQ", 16, 50) + bytes(20), "truncated"),
    (forged_header((2, 2)) + struct.pack("<I", 1) + struct.pack("<QQ", 16, 20) + bytes(20), "disagree"),
    (forged_header((2, 2)) + struct.pack("<I", 1) + struct.pack("<QQ", 32, 20) + bytes(20), "does not fit"),
    (forged_header((2, 2)) + struct.pack("<I", 0), "hold 0 bytes"),
    (frames.pack(np.zeros((2, 2), np.float32)) + b"junk", "after the last chunk"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_malformed_frames_are_refused_in_one_line(frame: bytes, message: str) -> None:
    with pytest.raises(frames.FrameError, match=message) as error:
        frames.unpack(frame, 1 << 20)
    assert "\n" not in str(error.value)


def test_a_chunk_whose_lengths_disagree_with_its_blosc2_header_is_refused() -> None:
    good = bytearray(pack_array(np.arange(64, dtype=np.float32).reshape(4, 16)))
    header = frames.read_header(bytes(good))
    struct.pack_into("<Q", good, header.payload_offset + 4, 128)  # the chunk now claims 128 raw bytes, not 256
    with pytest.raises(frames.FrameError):
        frames.unpack(bytes(good), 1 << 20)


# ---- boxes and intensities -------------------------------------------------------------------------------


def test_boxes_are_clipped_rounded_and_their_slice_axis_found() -> None:
    box = parse_box([[7.6, 8.6], [-5, 40], [10, 99]], (16, 64, 64))
    assert box == BoxPrompt((8, 0, 10), (9, 40, 64)) and box.slice_axis((16, 64, 64)) == 0
    assert plane_box(box, 0).tolist() == [10, 0, 63, 39]
    sagittal = parse_box([[2, 12], [10, 40], [30, 31]], (16, 64, 64))
    assert sagittal.slice_axis((16, 64, 64)) == 2 and plane_box(sagittal, 2).tolist() == [10, 2, 39, 11]
    cube = parse_box([[2, 12], [10, 40], [30, 50]], (16, 64, 64))
    assert cube.slice_axis((16, 64, 64)) is None and volume_box(cube).tolist() == [30, 10, 2, 49, 39, 11]
    # a 2D image arrives as (1, H, W): its axis 0 is the slice even when the box is one row high too
    assert parse_box([[0, 1], [5, 6], [3, 40]], (1, 64, 64)).slice_axis((1, 64, 64)) == 0


@pytest.mark.parametrize(("coords", "message"), [
    ([[0, 1], [0, 5]], "three"),
    ("box", "three"),
    ([[5, 5], [0, 5], [0, 5]], "empty"),
    ([[3, 1], [0, 5], [0, 5]], "empty"),
    ([[0, 1], [70, 90], [0, 5]], "outside"),
    ([[0, 1], [-9, 0], [0, 5]], "outside"),
    ([[0, 1], [0, float("nan")], [0, 5]], "finite"),
    ([[0, 1], [0, "5"], [0, 5]], "finite"),
    ([[0, 1], [0, True], [0, 5]], "finite"),
])
def test_bad_boxes_are_400_in_one_line(coords: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as error:
        parse_box(coords, (16, 64, 64))
    assert error.value.status == 400


@pytest.mark.parametrize("make", [
    lambda rng: rng.normal(0, 400, (6, 20, 30)).astype(np.int16),
    lambda rng: rng.normal(-200, 700, (6, 20, 30)).astype(np.float32),
    lambda rng: rng.random((6, 20, 30)).astype(np.float32),
    lambda rng: rng.integers(0, 200, (6, 20, 30)).astype(np.uint16),
    lambda rng: rng.random((6, 20, 30)) > 0.5,
])
def test_volumes_become_uint8_exactly_as_seg_predict_makes_them(make) -> None:  # type: ignore[no-untyped-def]
    volume = make(np.random.default_rng(3))
    assert np.array_equal(volume_to_uint8(volume), to_uint8(volume))


# ---- leases ------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_leases_cap_expire_when_idle_or_dead_and_free_their_sessions() -> None:
    clock = Clock()
    closed: list[int] = []

    class Closing:
        def close(self) -> None:
            closed.append(1)

    table: LeaseTable[Closing] = LeaseTable(Closing, max_sessions=1, idle_timeout=10, liveness_timeout=4, clock=clock)
    lease = table.claim()
    with pytest.raises(ProtocolError) as full:
        table.claim()
    assert full.value.status == 503
    for _ in range(3):  # heartbeats keep it alive, but do not postpone the idle timeout
        clock.now += 3
        table.get(lease.token)
    assert table.remaining(lease) == pytest.approx(1.0)
    clock.now += 1.5
    with pytest.raises(ProtocolError, match="idle") as gone:
        table.get(lease.token)
    assert gone.value.status == 410 and closed == [1] and len(table) == 0
    second = table.claim()
    clock.now += 5  # no request at all: dead
    assert table.sweep() == 1 and closed == [1, 1]
    with pytest.raises(ProtocolError, match="expired or unknown"):
        table.get(second.token)
    with pytest.raises(ProtocolError, match="missing"):
        table.get(None)
    third = table.claim()
    assert table.release(third.token) and not table.release(third.token) and closed == [1, 1, 1]


# ---- sessions ------------------------------------------------------------------------------------------------


def loaded_session(mask: np.ndarray) -> tuple[Session, FakeEngine]:
    engine = FakeEngine()
    session = Session(engine)
    session.set_image((1, *mask.shape), volume_to_uint8(ct_volume(mask)[0]), {})
    session.set_target_buffer(list(mask.shape), "uint8")
    return session, engine


def test_a_session_adds_removes_queues_undoes_and_keeps_an_initial_segmentation() -> None:
    mask = ellipsoid()
    session, engine = loaded_session(mask)
    assert session.target is not None
    change = session.add_box([[8, 9], [10, 50], [15, 55]], include=True, run=True)
    assert change.ran and np.array_equal(session.target > 0, mask)
    assert change.region == [[3, 14], [16, 45], [22, 47]]
    removed = session.add_box([[8, 9], [10, 50], [15, 34]], include=False, run=True)
    assert removed.region is not None and not session.target[:, :, :34].any() and session.target[:, :, 34:].any()
    assert session.undo().region == removed.region and np.array_equal(session.target > 0, mask)
    assert session.undo().ran and not session.target.any()
    assert not session.undo().ran
    # queued boxes run together on predict, as one undo step
    assert not session.add_box([[8, 9], [10, 50], [15, 34]], include=True, run=False).ran
    assert not session.target.any()
    session.add_box([[8, 9], [10, 50], [34, 55]], include=True, run=False)
    assert session.predict().ran and np.array_equal(session.target > 0, mask)
    assert not session.predict().ran
    session.undo()
    assert not session.target.any()
    # an initial segmentation (labels kept as given) is edited by later boxes, and undone whole
    initial = np.zeros(mask.shape, np.uint8)
    initial[8, 20:40, 20:40] = 1
    session.add_initial_seg(initial)
    assert session.add_box([[2, 3], [50, 60], [50, 60]], include=False, run=True).region is None  # no object there
    assert np.array_equal(session.target, initial)
    session.add_box([[8, 9], [0, 64], [0, 30]], include=False, run=True)
    # the object's voxels left of x = 30 go; the initial segmentation's others stay
    assert np.array_equal(session.target > 0, (initial > 0) & ~(mask & (np.arange(64) < 30)))
    session.undo()
    session.undo()
    assert not session.target.any()
    session.reset()
    assert not session.undo().ran
    assert len(engine.boxes) == 6


def test_a_session_refuses_what_does_not_match_its_image() -> None:
    mask = ellipsoid()
    engine = FakeEngine()
    session = Session(engine)
    with pytest.raises(ProtocolError, match="no image"):
        session.set_target_buffer([16, 64, 64], "uint8")
    session.set_image((1, *mask.shape), mask.astype(np.uint8), {})
    with pytest.raises(ProtocolError, match="no target buffer"):
        session.add_box([[8, 9], [10, 50], [15, 55]], True, True)
    for shape, dtype, message in [([16, 64, 65], "uint8", "does not match"), ([16, 64], "uint8", "three"),
                                  ([16, 64, 64], "float32", "integer"), ([16, 64, 64], "object", "integer"),
                                  ([16, 64, 64], "nonsense", "invalid")]:
        with pytest.raises(ProtocolError, match=message):
            session.set_target_buffer(shape, dtype)
    session.set_target_buffer([16, 64, 64], "uint8")
    with pytest.raises(ProtocolError, match="does not match"):
        session.add_initial_seg(np.zeros((16, 64, 63), np.uint8))
    with pytest.raises(ProtocolError, match="integer"):
        session.add_initial_seg(np.zeros((16, 64, 64), np.float32))


# ---- the protocol, through nninteractive-client ----------------------------------------------------------


class InProcessServer:
    """The app on a free 127.0.0.1 port in a thread (uvicorn), with the stand-in engine."""

    def __init__(self, config: ServerConfig) -> None:
        self.engine = FakeEngine()
        self.app = make_app(self.engine, config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[InProcessServer]:
    running = InProcessServer(ServerConfig(api_key=KEY, max_sessions=1, idle_timeout=600, liveness_timeout=60,
                                           limits=Limits(body_bytes=1 << 20, array_bytes=8 << 20)))
    yield running
    running.stop()


@pytest.fixture()
def session(server: InProcessServer) -> Iterator[nnInteractiveRemoteInferenceSession]:
    client = nnInteractiveRemoteInferenceSession(server.url, api_key=KEY)
    yield client
    client.close()


def test_the_client_segments_undoes_and_initialises_through_the_protocol(
        session: nnInteractiveRemoteInferenceSession) -> None:
    assert session.supported_interactions == capabilities()["supported_interactions"]
    assert session.supports_undo and session.supports_initial_label and session.license == "Apache-2.0"
    mask = ellipsoid()
    session.set_image(ct_volume(mask), {"spacing": np.array([2.5, 0.8, 0.8])})
    assert session.original_image_shape == (1, 16, 64, 64)
    buffer = np.zeros(mask.shape, np.uint8)
    session.set_target_buffer(buffer)
    session.set_do_autozoom(True)
    assert session.add_bbox_interaction([[8, 9], [10, 50], [15, 55]], include_interaction=True) == \
        [[3, 14], [16, 45], [22, 47]]
    assert np.array_equal(buffer > 0, mask)
    session.add_bbox_interaction([[8, 9], [10, 50], [15, 34]], include_interaction=False)
    assert not buffer[:, :, :34].any() and buffer[:, :, 34:].any()
    assert session.undo() and np.array_equal(buffer > 0, mask)
    session.reset_interactions()
    assert not buffer.any() and not session.undo()
    assert session.add_bbox_interaction([[2, 14], [10, 50], [15, 55]], True, run_prediction=False) is None
    assert not buffer.any()
    assert session._predict() is not None and np.array_equal(buffer > 0, mask)
    assert session._predict() is None
    initial = np.zeros(mask.shape, np.uint8)
    initial[8, 20:40, 20:40] = 1
    assert session.add_initial_seg_interaction(initial) is None and np.array_equal(buffer, initial)
    session.add_bbox_interaction([[8, 9], [0, 64], [0, 30]], include_interaction=False)
    assert np.array_equal(buffer > 0, (initial > 0) & ~(mask & (np.arange(64) < 30)))
    assert session.undo() and np.array_equal(buffer, initial)
    for refused in (lambda: session.add_point_interaction([8, 30, 30], True),
                    lambda: session.add_scribble_interaction(np.zeros(mask.shape, np.uint8), True),
                    lambda: session.add_lasso_interaction(np.zeros(mask.shape, np.uint8), True)):
        with pytest.raises(httpx.HTTPStatusError) as error:
            refused()
        assert error.value.response.status_code == 400
        assert "trained on box prompts only" in error.value.response.json()["detail"]
    status = session.lease_status()
    assert status["idle_timeout_seconds"] == 600 and 590 < status["remaining_seconds"] <= 600
    assert 590 < session.heartbeat() <= 600


def test_a_second_session_beyond_max_sessions_is_503_and_a_wrong_key_401(
        server: InProcessServer, session: nnInteractiveRemoteInferenceSession) -> None:
    with pytest.raises(ServerAtCapacityError):
        nnInteractiveRemoteInferenceSession(server.url, api_key=KEY)
    for key in ("wrong", None):
        with pytest.raises(httpx.HTTPStatusError) as error:
            nnInteractiveRemoteInferenceSession(server.url, api_key=key)
        assert error.value.response.status_code == 401
    assert httpx.get(server.url + "/healthz").json() == {"ok": True}


def raw(server: InProcessServer, token: str, path: str, body: bytes, meta: dict | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", "X-Lease-Token": token, "Content-Type": "application/octet-stream"}
    if meta is not None:
        headers["X-Meta"] = json.dumps(meta)
    return httpx.post(server.url + path, content=body, headers=headers, timeout=30)


def test_malformed_and_too_large_requests_are_4xx_in_one_line_and_the_server_goes_on(
        server: InProcessServer, session: nnInteractiveRemoteInferenceSession) -> None:
    token = session._lease_token
    assert token is not None
    volume = ct_volume(ellipsoid())
    good = pack_array(volume)
    cases = [
        ("/set_image", good[:-7], 400),  # truncated
        ("/set_image", b"PK\x03\x04" + good[4:], 400),  # not a frame
        ("/set_image", forged_header((1, 1000, 5000, 2500)) + struct.pack("<I", 0), 413),  # claims 50 GB
        ("/set_image", pack_array(volume[0]), 400),  # 3D, not (C, D, H, W)
        ("/set_image", b"", 400),  # no body
        ("/set_image", np.random.default_rng(0).bytes(2 << 20), 413),  # body over --max-body-mb
        ("/add_initial_seg_interaction", pack_array(np.zeros((2, 2), np.uint8)), 400),
    ]
    for path, body, status in cases:
        answer = raw(server, token, path, body, meta={"image_properties": {}})
        assert answer.status_code == status, (path, answer.text)
        assert "\n" not in answer.json()["detail"]
    assert raw(server, token, "/set_image", good, meta=None).status_code == 200  # no X-Meta: no properties
    bad_meta = httpx.post(server.url + "/set_image", content=good, headers={
        "Authorization": f"Bearer {KEY}", "X-Lease-Token": token, "X-Meta": "{not json"})
    assert bad_meta.status_code == 400
    headers = {"Authorization": f"Bearer {KEY}", "X-Lease-Token": token}
    for path, payload in [("/set_target_buffer", {"shape": [16, 64, 65], "dtype": "uint8"}),
                          ("/set_target_buffer", {"shape": [16, 64, 64]}),
                          ("/add_bbox_interaction", {"bbox_coords": [[0, 1], [0, 5], [0, 5]],
                                                     "include_interaction": True}),  # no target buffer yet
                          ("/add_bbox_interaction", {"include_interaction": True}),
                          ("/set_do_autozoom", {"do_autozoom": "yes"})]:
        answer = httpx.post(server.url + path, json=payload, headers=headers)
        assert answer.status_code == 400, (path, answer.text)
    assert httpx.post(server.url + "/predict", content=b"[1, 2]", headers=headers).status_code == 400
    assert httpx.post(server.url + "/predict", content=b"{oops", headers=headers).status_code == 400
    session.set_target_buffer(np.zeros(volume.shape[1:], np.uint8))
    outside = httpx.post(server.url + "/add_bbox_interaction", headers=headers, json={
        "bbox_coords": [[8, 9], [100, 120], [0, 5]], "include_interaction": True})
    assert outside.status_code == 400 and "outside the image" in outside.json()["detail"]
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert session.add_bbox_interaction([[8, 9], [10, 50], [15, 55]], True) is not None  # still serving


def test_an_expired_lease_is_410_and_its_slot_is_free_again() -> None:
    short = InProcessServer(ServerConfig(idle_timeout=1.0, liveness_timeout=30, max_sessions=1, sweep_interval=60))
    try:
        first = nnInteractiveRemoteInferenceSession(short.url)
        first.set_image(ct_volume(ellipsoid()))
        time.sleep(1.6)  # the idle timeout with a generous margin; heartbeats do not postpone it
        with pytest.raises(SessionExpiredError):
            first.set_target_buffer(np.zeros((16, 64, 64), np.uint8))
        second = nnInteractiveRemoteInferenceSession(short.url)  # the expired lease holds no slot
        second.close()
        first.close()
    finally:
        short.stop()


# ---- command line and layering -----------------------------------------------------------------------------


def test_listening_beyond_loopback_without_a_key_warns() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("0.0.0.0", "k") is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning is not None and warning.startswith("WARNING") and "--api-key" in warning
    in_image = exposure_warning("0.0.0.0", None, container=True)  # the image's `serve` (docker/serve.sh)
    assert in_image is not None and "-p 127.0.0.1:1527:1527" in in_image and "--api-key" in in_image


def test_bad_arguments_stop_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--max-sessions", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-sessions must be positive, got 0"


def _project_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_serve_sits_above_router_and_nothing_below_imports_it() -> None:
    """docs/architecture.md's row for serve/: it may import models and router; models, router and predict.py
    never import serve (tests/test_layout.py checks the other rooms)."""
    project = {"predict", "models", "router", "evaluation", "benchmarks", "sample_data", "convert", "tests", "serve"}
    wrong = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted((ROOT / "serve").rglob("*.py"))
             for name in _project_imports(path) & project if name not in {"models", "router", "serve"}]
    below = [ROOT / "predict.py", *sorted((ROOT / "models").rglob("*.py")), *sorted((ROOT / "router").rglob("*.py"))]
    wrong += [f"{path.relative_to(ROOT)} imports serve" for path in below if "serve" in _project_imports(path)]
    assert not wrong, wrong


def test_background_encoding_goes_middle_first_and_waits_for_the_boxes() -> None:
    from serve.engine import Foreground, middle_out

    assert middle_out(5) == [2, 3, 1, 4, 0] and middle_out(4) == [1, 2, 0, 3] and middle_out(1) == [0]
    foreground, stop, waited = Foreground(), threading.Event(), threading.Event()
    with foreground.active():
        waiter = threading.Thread(target=lambda: (foreground.wait_idle(stop), waited.set()))
        waiter.start()
        assert not waited.wait(0.3)  # a box is being segmented: the encoder waits
    assert waited.wait(5)  # and goes on once none is
    waiter.join()


def test_the_memory_guard_refuses_an_image_that_cannot_fit_before_it_is_decompressed(tmp_path: Path) -> None:
    from models.pool import ModelPool
    from router.routing import RoutingTable
    from serve.engine import ModelEngine

    engine = ModelEngine(RoutingTable.load(), ModelPool(tmp_path), memory=lambda: 3 << 30, background=False)
    engine.check_image((1, 150, 512, 512), np.dtype(np.int16))  # 75 MiB as uploaded: fits in 3 GiB
    with pytest.raises(ProtocolError, match="needs .* GiB of memory, 3.00 GiB available") as error:
        engine.check_image((1, 600, 1024, 1024), np.dtype(np.float32))  # 2.3 GiB, and its float64 percentiles
    assert error.value.status == 507
    ModelEngine(RoutingTable.load(), ModelPool(tmp_path), memory=None).check_image((1, 10**4, 10**4, 10**4),
                                                                                     np.dtype(np.float64))
