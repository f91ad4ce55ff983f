"""The ASGI app (Starlette): nnInteractive's endpoints (serve.protocol) over leases, sessions and an engine.

Every endpoint but /healthz checks the API key first (401), then the lease (410) where it needs one.
Bodies are read with a bound before anything is parsed (413 past it: `Limits`); JSON bodies are small
and must be objects; frames are read by serve.frames (400 malformed, 413 too large, before allocation),
and /set_image asks the engine's memory guard before decompressing (507). Work on a session runs in a
worker thread under the lease's lock (one request at a time per session), so the event loop keeps
answering heartbeats, /healthz and other sessions. Any failure is one line in `{"detail": ...}` and the
server goes on; an unexpected one is logged with its traceback and answered 500.

Prediction responses (add_bbox_interaction, predict, undo, add_initial_seg_interaction) carry
`X-Meta: {"ran_prediction", "bbox", "dtype", "shape"}` and, when `bbox` is not null, the target buffer's
contents in that half-open region as an NNIA frame: the client writes them into its own buffer there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.validation import CaseError
from serve import protocol as p
from serve.frames import FrameError, FrameTooLarge, pack, read_header, unpack
from serve.intensity import volume_to_uint8
from serve.leases import Lease, LeaseTable
from serve.protocol import ProtocolError
from serve.session import BoxEngine, Change, Session

log = logging.getLogger("seg.serve")
T = TypeVar("T")
DRAIN_BYTES = 64 << 20  # of a refused body, read this much before answering (a client mid-upload then reads it)


class ServingEngine(BoxEngine, Protocol):
    """A session's engine plus the memory guard /set_image asks before decompressing (serve.engine.ModelEngine)."""

    def check_image(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Raise ProtocolError (507) when an array of `shape` and `dtype` and its conversion cannot fit."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what a request may make the server hold: a binary body, an array once decompressed,
    a JSON body."""

    body_bytes: int = 4 << 30
    array_bytes: int = 16 << 30
    json_bytes: int = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """api_key: the bearer token every request but /healthz needs (None: none); max_sessions, idle_timeout,
    liveness_timeout (seconds): leases (serve.leases); sweep_interval: seconds between sweeps of expired
    leases; modality: the routing table's modality for volumes whose image_properties name none."""

    api_key: str | None = None
    max_sessions: int = 2
    idle_timeout: float = 600.0
    liveness_timeout: float = 60.0
    sweep_interval: float = 15.0
    modality: str = "CT"
    limits: Limits = Limits()


def _error(error: ProtocolError) -> JSONResponse:
    headers = {"Retry-After": "10"} if error.status == 503 else None
    return JSONResponse({"detail": error.detail}, status_code=error.status, headers=headers)


async def _drain(request: Request) -> None:
    drained = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > DRAIN_BYTES:
                break


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most `limit` bytes: ProtocolError 413 as soon as it is known to be larger
    (from Content-Length, else while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError(400, f"bad Content-Length {declared[:20]!r}")
        if int(declared) > limit:
            await _drain(request)
            raise ProtocolError(413, f"request body of {declared} bytes exceeds the {limit} allowed")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _drain(request)
            raise ProtocolError(413, f"request body exceeds the {limit} bytes allowed")
        parts.append(chunk)
    return b"".join(parts)


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(400, f"{what} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError(400, f"{what} must be a JSON object")
    return value


def _flag(payload: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(400, f"{name} must be true or false" + ("" if name in payload else " (missing)"))
    return value


def prediction_response(change: Change, target: np.ndarray | None) -> Response:
    """X-Meta {ran_prediction, bbox, dtype, shape} and the target buffer's contents in `bbox` as a frame."""
    meta: dict[str, Any] = {"ran_prediction": change.ran, "bbox": None}
    content = b""
    if change.ran and change.region is not None and target is not None:
        region = target[tuple(slice(low, high) for low, high in change.region)]
        meta.update(bbox=change.region, dtype=str(region.dtype), shape=list(region.shape))
        content = pack(region)
    headers = {p.META_HEADER: json.dumps(meta, separators=(",", ":"))}
    return Response(content, media_type=p.OCTET_STREAM, headers=headers)


def make_app(engine: ServingEngine, config: ServerConfig = ServerConfig()) -> Starlette:
    """The server's ASGI app: sessions made on `engine`, leases, key and limits as `config` says."""
    limits = config.limits
    table: LeaseTable[Session] = LeaseTable(lambda: Session(engine, config.modality), config.max_sessions,
                                            config.idle_timeout, config.liveness_timeout)
    expected = f"Bearer {config.api_key}".encode() if config.api_key else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not given:
            raise ProtocolError(401, "missing bearer token (the server was started with --api-key)")
        if not hmac.compare_digest(given, expected):
            raise ProtocolError(401, "invalid bearer token")

    def endpoint(handler: Callable[[Request], Awaitable[Response]], auth: bool = True
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                if auth:
                    authorize(request)
                return await handler(request)
            except ProtocolError as error:
                return _error(error)
            except FrameTooLarge as error:
                return _error(ProtocolError(413, str(error)))
            except FrameError as error:
                return _error(ProtocolError(400, str(error)))
            except Exception as error:  # one request's failure never stops the server
                log.exception("%s failed", request.url.path)
                return _error(ProtocolError(500, f"internal error: {type(error).__name__}: {error}"))
        return guarded

    def lease_of(request: Request, active: bool = True) -> Lease[Session]:
        return table.get(request.headers.get(p.LEASE_HEADER), active)

    async def on_session(lease: Lease[Session], work: Callable[[Session], T]) -> T:
        """`work(session)` in a worker thread, under the lease's lock (a session's requests in turn)."""
        def run() -> T:
            with lease.lock:
                if lease.session.closed.is_set():
                    raise ProtocolError(410, "lease expired")
                try:
                    return work(lease.session)
                except CaseError as error:
                    raise ProtocolError(400, str(error)) from None
        return await run_in_threadpool(run)

    async def json_payload(request: Request) -> dict[str, Any]:
        return _json_object(await read_body(request, limits.json_bytes), "request body")

    async def frame_request(request: Request) -> tuple[dict[str, Any], bytes]:
        meta = _json_object(request.headers.get(p.META_HEADER, ""), f"{p.META_HEADER} header")
        return meta, await read_body(request, limits.body_bytes)

    # ---- health, capabilities, leases -------------------------------------------------------------------

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def capabilities(request: Request) -> Response:
        return JSONResponse(p.capabilities())

    async def claim(request: Request) -> Response:
        lease = await run_in_threadpool(table.claim)
        return JSONResponse({"lease_token": lease.token, "idle_timeout_seconds": table.idle_timeout,
                             "liveness_timeout_seconds": table.liveness_timeout, "max_sessions": table.max_sessions})

    async def release(request: Request) -> Response:
        await run_in_threadpool(table.release, request.headers.get(p.LEASE_HEADER))
        return JSONResponse({"released": True})

    async def heartbeat(request: Request) -> Response:
        lease = lease_of(request, active=False)  # liveness only: the idle clock runs on
        return JSONResponse({"remaining_seconds": table.remaining(lease)})

    async def lease_status(request: Request) -> Response:
        lease = table.peek(request.headers.get(p.LEASE_HEADER))
        return JSONResponse({"remaining_seconds": table.remaining(lease), "idle_timeout_seconds": table.idle_timeout})

    # ---- image and buffer -----------------------------------------------------------------------------

    async def set_image(request: Request) -> Response:
        lease = lease_of(request)
        meta, body = await frame_request(request)
        properties = meta.get("image_properties") or {}
        if not isinstance(properties, dict):
            raise ProtocolError(400, "image_properties must be a JSON object")
        header = read_header(body)
        if len(header.shape) != 4 or min(header.shape) < 1:
            raise ProtocolError(400, f"image must be 4D (C, D, H, W), no axis empty; got shape {list(header.shape)}")
        if header.nbytes > limits.array_bytes:
            raise ProtocolError(413, f"image of {header.nbytes} bytes exceeds the {limits.array_bytes} allowed")

        def work(session: Session) -> list[int]:
            nonlocal body
            session.drop_image()  # the previous image's memory is free for the new one (nnInteractive resets here too)
            engine.check_image(header.shape, header.dtype)
            image = unpack(body, limits.array_bytes, header)
            body = b""  # the compressed copy goes as soon as the array is there
            volume = volume_to_uint8(image[0])  # one channel: the models see grey images
            shape = image.shape
            del image
            return session.set_image(shape, volume, properties)

        return JSONResponse({"original_image_shape": await on_session(lease, work)})

    async def set_target_buffer(request: Request) -> Response:
        lease = lease_of(request)
        payload = await json_payload(request)
        for name in ("shape", "dtype"):
            if name not in payload:
                raise ProtocolError(400, f"missing required field: {name}")
        await on_session(lease, lambda session: session.set_target_buffer(payload["shape"], payload["dtype"]))
        return JSONResponse({})

    async def set_do_autozoom(request: Request) -> Response:
        lease = lease_of(request)
        payload = await json_payload(request)
        flag = _flag(payload, "do_autozoom")

        def work(session: Session) -> None:
            session.do_autozoom = flag  # accepted and kept; the box strategies have no zoom to switch
        await on_session(lease, work)
        return JSONResponse({})

    async def reset_interactions(request: Request) -> Response:
        lease = lease_of(request)
        await read_body(request, limits.json_bytes)
        await on_session(lease, lambda session: session.reset())
        return JSONResponse({})

    # ---- interactions ---------------------------------------------------------------------------------

    async def answer(lease: Lease[Session], work: Callable[[Session], Change]) -> Response:
        """Run `work` on the session and build the prediction response under the same lock (it reads the buffer)."""
        return await on_session(lease, lambda session: prediction_response(work(session), session.target))

    async def add_bbox(request: Request) -> Response:
        lease = lease_of(request)
        payload = await json_payload(request)
        if "bbox_coords" not in payload:
            raise ProtocolError(400, "missing required field: bbox_coords")
        include, run = _flag(payload, "include_interaction"), _flag(payload, "run_prediction", True)
        return await answer(lease, lambda session: session.add_box(payload["bbox_coords"], include, run))

    async def predict(request: Request) -> Response:
        lease = lease_of(request)
        await json_payload(request)  # force_full_refine: every prediction here is a full one
        return await answer(lease, lambda session: session.predict())

    async def undo(request: Request) -> Response:
        lease = lease_of(request)
        await read_body(request, limits.json_bytes)
        return await answer(lease, lambda session: session.undo())

    async def add_initial_seg(request: Request) -> Response:
        lease = lease_of(request)
        _, body = await frame_request(request)
        header = read_header(body)
        if len(header.shape) != 3:
            raise ProtocolError(400, f"initial segmentation must be 3D, got shape {list(header.shape)}")

        def work(session: Session) -> Change:
            # a segmentation is never larger than its image's target buffer: bounded by that, not the array limit
            target = session.target
            bound = limits.array_bytes if target is None else target.size * header.dtype.itemsize
            return session.add_initial_seg(unpack(body, bound, header))
        return await answer(lease, work)

    def refused(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            await read_body(request, limits.body_bytes)  # read (bounded) so the client gets the answer
            raise ProtocolError(400, f"{kind} {p.BOX_ONLY}; draw a box instead")
        return handler

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(config.sweep_interval)
                try:
                    await run_in_threadpool(table.sweep)
                except Exception:
                    log.exception("sweeping leases failed")
        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await run_in_threadpool(table.close_all)

    post = ["POST"]
    routes = [
        Route(p.HEALTHZ, endpoint(healthz, auth=False), methods=["GET"]),
        Route(p.CAPABILITIES, endpoint(capabilities), methods=["GET"]),
        Route(p.CLAIM, endpoint(claim), methods=post),
        Route(p.RELEASE, endpoint(release), methods=post),
        Route(p.HEARTBEAT, endpoint(heartbeat), methods=post),
        Route(p.LEASE_STATUS, endpoint(lease_status), methods=["GET"]),
        Route(p.SET_IMAGE, endpoint(set_image), methods=post),
        Route(p.SET_TARGET_BUFFER, endpoint(set_target_buffer), methods=post),
        Route(p.SET_DO_AUTOZOOM, endpoint(set_do_autozoom), methods=post),
        Route(p.RESET_INTERACTIONS, endpoint(reset_interactions), methods=post),
        Route(p.ADD_BBOX, endpoint(add_bbox), methods=post),
        Route(p.PREDICT, endpoint(predict), methods=post),
        Route(p.UNDO, endpoint(undo), methods=post),
        Route(p.ADD_INITIAL_SEG, endpoint(add_initial_seg), methods=post),
        Route(p.ADD_POINT, endpoint(refused("point interaction")), methods=post),
        Route(p.ADD_SCRIBBLE, endpoint(refused("scribble interaction")), methods=post),
        Route(p.ADD_LASSO, endpoint(refused("lasso interaction")), methods=post),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.leases = table
    return app

