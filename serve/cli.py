"""`seg-serve` (= `python -m serve`): nnInteractive's remote back-end on this machine's CPU.

    seg-serve [--host 127.0.0.1] [--port 1527] [--api-key KEY] [--max-sessions 2] [--precision auto]
              [--threads N] [--modality CT] [--config routes.toml] [--idle-timeout 600] [--liveness-timeout 60]

Then, in napari-nninteractive or SlicerNNInteractive, choose the remote server http://127.0.0.1:1527
(and the key, if one was given). The model is compiled before the server answers, so the first box does
not wait for it. Anything but a loopback address without a key prints a warning: whoever reaches the
port can then upload volumes and run the models.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from models.registry import PRECISIONS

log = logging.getLogger("seg.serve")
API_KEY_ENV = "SEG_SERVE_API_KEY"
CONTAINER_ENV = "SEG_SERVE_CONTAINER"  # "1": run by the Docker image's `serve` (docker/serve.sh)
MIB = 1 << 20


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="seg-serve", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=1527, help="TCP port (nnInteractive's default)")
    ap.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                    help=f"bearer token clients must send (default: ${API_KEY_ENV}; none: no check)")
    ap.add_argument("--max-sessions", type=int, default=2, help="clients served at once (503 beyond)")
    ap.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS], help="as seg-predict's")
    ap.add_argument("--threads", type=int, default=None,
                    help="OpenVINO threads (default: the CPUs this process may use)")
    ap.add_argument("--modality", default="CT",
                    help="routing-table modality of uploaded volumes (CT, MR, PET, ...); image_properties "
                         "{'modality': ...} overrides it per volume")
    ap.add_argument("--config", type=Path, default=None, help="routing table (default: router/routes.toml)")
    ap.add_argument("--models", type=Path, default=None,
                    help="exported IR folder (default: $SEG_MODEL_DIR or models/ir)")
    ap.add_argument("--ov-cache", type=Path, default=None, help="OpenVINO compiled-model cache folder")
    ap.add_argument("--idle-timeout", type=float, default=600.0,
                    help="seconds without a user action after which a session is given up (410 then)")
    ap.add_argument("--liveness-timeout", type=float, default=60.0,
                    help="seconds without any request, heartbeats included, after which a session is given up")
    ap.add_argument("--no-background-encoding", action="store_true",
                    help="do not encode a volume's slices right after set_image (each box then encodes its own)")
    ap.add_argument("--sweep-interval", type=float, default=15.0, help="seconds between sweeps of expired sessions")
    ap.add_argument("--max-body-mb", type=float, default=4096.0, help="largest request body (413 beyond)")
    ap.add_argument("--max-array-mb", type=float, default=16384.0,
                    help="largest array once decompressed (413 beyond, before allocating)")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return ap


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def exposure_warning(host: str, api_key: str | None, container: bool = False) -> str | None:
    """The warning for listening beyond loopback without a key; None when there is nothing to warn of.
    `container`: seg-serve runs in the Docker image (its `serve` command), where it must listen on every
    interface of the container and `docker run -p` decides who reaches it."""
    if api_key or is_loopback(host):
        return None
    if container:
        return ("WARNING: seg-serve listens on every interface of its container without --api-key: anyone who "
                "reaches the published port can upload images and run the models; publish it on this machine "
                "only (docker run -p 127.0.0.1:1527:1527 ...) or give --api-key (or -e " + API_KEY_ENV + "=...)")
    return (f"WARNING: seg-serve listens on {host} without --api-key: anyone who reaches this port can upload "
            "images and run the models; give --api-key (or $" + API_KEY_ENV + ") or bind to 127.0.0.1")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    for name, value in (("--max-sessions", args.max_sessions), ("--idle-timeout", args.idle_timeout),
                        ("--liveness-timeout", args.liveness_timeout), ("--sweep-interval", args.sweep_interval),
                        ("--max-body-mb", args.max_body_mb), ("--max-array-mb", args.max_array_mb)):
        if value <= 0:
            print(f"error: {name} must be positive, got {value}", file=sys.stderr)
            return 2
    if (warning := exposure_warning(args.host, args.api_key, os.environ.get(CONTAINER_ENV) == "1")) is not None:
        print(warning, file=sys.stderr)

    # Imported here: --help and the checks above answer without OpenVINO or the web server loaded.
    import uvicorn

    from router.pipeline import RunConfig
    from serve.app import Limits, ServerConfig, make_app
    from serve.engine import ModelEngine

    try:
        segmenter = RunConfig.of(models=args.models, threads=args.threads, precision=args.precision,
                                 config=args.config, ov_cache=args.ov_cache).segmenter()
        engine = ModelEngine(segmenter.table, segmenter.pool, background=not args.no_background_encoding)
        route = engine.warm(args.modality)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    limits = Limits(body_bytes=int(args.max_body_mb * MIB), array_bytes=int(args.max_array_mb * MIB))
    config = ServerConfig(args.api_key, args.max_sessions, args.idle_timeout, args.liveness_timeout,
                          args.sweep_interval, args.modality, limits)
    log.info("seg-serve: %s volumes on %s; http://%s:%d, at most %d sessions", args.modality, route, args.host,
             args.port, args.max_sessions)
    uvicorn.run(make_app(engine, config), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
