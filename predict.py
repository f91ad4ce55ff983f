"""Segment every challenge case in a folder: `python predict.py -i INPUTS -o OUTPUTS`.

Reads `2DBox_*.npz` / `3DBox_*.npz` cases, routes each by modality (router/routes.toml), runs the
route's strategy and model on OpenVINO and writes `segs` under the same file name. A bad case gets a
one-line error and the others still run; the exit status is 1 if any case failed. A case that cannot fit
in the memory left is refused the same way (router/memory.py). SIGTERM or SIGINT stops the run cleanly
(exit 128 + the signal); `--continue-prediction` then skips the cases already written.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import router  # noqa: F401 (first: its guard refuses a user's own `models` package before ours is imported)
from models.hardware import cpu_budget
from models.predictor import DEFAULT_CACHE_BYTES
from models.registry import FALLBACK_MODEL, PRECISIONS
from router.casefile import check_writable
from router.efficiency import EfficiencyLog
from router.parts import efficiency_name
from router.pipeline import RunConfig
from router.provenance import RunRecord, record_name, run_facts
from router.runner import Backend, LocalBackend, list_cases, run_cases

log = logging.getLogger("seg")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-i", "--input", type=Path, default=Path("/workspace/inputs"), help="folder of case .npz files")
    parser.add_argument("-o", "--output", type=Path, default=Path("/workspace/outputs"),
                        help="folder for segs .npz files")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the CPUs this process may use, within a docker --cpus quota; "
                             "with --scheduler, those of each worker divided by its Dask threads)")
    parser.add_argument("--config", type=Path, default=None, help="routing table TOML (default: router/routes.toml)")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder of exported IR (default: $SEG_MODEL_DIR or models/ir)")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="auto (default): bf16 where the CPU computes bf16 natively (AMX, AVX-512 BF16), "
                             "else int8 where it holds fp32's accuracy (models/hardware.py), else fp32; "
                             "fp32; bf16 (FP32 model computed in bf16, input layers in f32); "
                             "int8 (quantised encoder, FP32 decoder); f16 (FP32 model computed in f16: Arm CPUs "
                             "with ARMv8.2 FP16; on Arm auto takes fp32 unless f16 holds fp32's accuracy)")
    parser.add_argument("--cache-mb", type=int, default=DEFAULT_CACHE_BYTES >> 20,
                        help="embedding cache budget per model, MiB (default: %(default)s)")
    parser.add_argument("--ov-cache", type=Path, default=None, metavar="DIR",
                        help="keep OpenVINO's compiled models in DIR (a folder that lasts across runs or containers, "
                             "e.g. a mounted volume): later runs on the same CPU model skip most of the compile "
                             "(default: $SEG_OV_CACHE_DIR, else no cache)")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="split the input folder into this many parts, balanced by file size (docs/scale-out.md)")
    parser.add_argument("--part-id", type=int, default=0,
                        help="segment only part K (0-based) of --num-parts; writes efficiency.K.csv")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the cases as tasks on this Dask scheduler (tcp://host:8786 or a scheduler file)")
    parser.add_argument("--continue-prediction", action="store_true",
                        help="skip cases whose output already holds a whole segs of the right shape (resume a "
                             "stopped or killed run); the others are redone")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (drawn only on a terminal anyway)")
    return parser.parse_args(argv)


def _log_to_stderr() -> None:
    """Plain one-line messages on (the current) stderr; the pipeline's modules log to "seg" too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _log_to_stderr()
    if not args.input.is_dir():
        log.error("error: input folder %s does not exist", args.input)
        return 1
    if args.output.resolve() == args.input.resolve():
        log.error("error: output folder %s is the input folder: outputs would replace the cases", args.output)
        return 1
    # The run's configuration, parsed once: every back-end builds its Segmenter from it (router.pipeline).
    run = RunConfig.of(models=args.models, threads=args.threads, precision=args.precision,
                       cache_bytes=args.cache_mb << 20, config=args.config, ov_cache=args.ov_cache)
    try:
        segmenter = run.segmenter(threads=args.threads or cpu_budget())  # compiles nothing yet
    except (OSError, ValueError) as error:  # tomllib.TOMLDecodeError is a ValueError
        log.error("error: routing table %s: %s", args.config or "router/routes.toml", error)
        return 1
    if not 0 <= args.part_id < args.num_parts:
        log.error("error: --part-id must be in 0..%d for --num-parts %d, got %d", args.num_parts - 1,
                  args.num_parts, args.part_id)
        return 1
    try:
        check_writable(args.output)
    except OSError as error:
        log.error("error: output folder %s is not writable (%s)", args.output, error.strerror or error)
        return 1
    pool = segmenter.pool
    if FALLBACK_MODEL not in pool.available:
        log.error("error: %s is not exported in %s (run ./build.sh export)", FALLBACK_MODEL, pool.directory)
        return 1

    cases = list_cases(args.input, args.num_parts, args.part_id)
    timings = EfficiencyLog(args.output / efficiency_name(args.num_parts, args.part_id),
                            resume=args.continue_prediction)
    backend: Backend
    if args.scheduler:
        from router.distributed import DaskBackend  # Dask only for --scheduler

        # explicit paths must be on the shared folder; by default each worker uses its own models/ir and table
        backend = DaskBackend(args.scheduler, run)
    else:
        backend = LocalBackend(segmenter, progress=not args.no_progress)
    arguments = {**dataclasses.asdict(run), "num_parts": args.num_parts, "part_id": args.part_id,
                 "scheduler": args.scheduler or "", "continue_prediction": args.continue_prediction}
    record = RunRecord(args.output / record_name(args.num_parts, args.part_id), run_facts(pool, args.config, arguments),
                       resume=args.continue_prediction)
    return run_cases(cases, args.output, backend, timings, record, resume=args.continue_prediction,
                     progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
