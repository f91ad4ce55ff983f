"""Start-up of a one-case container, step by step: where a container's run goes on a small case.

    python -m benchmarks.startup --case CASE.npz [--image seg:latest] [--runs 3]

The challenge's harness starts a fresh container per case and times it whole. This prints, for RUNS runs
(median and min, seconds): the container run with the challenge's command (`/bin/bash -c "sh predict.sh"`),
an empty container of the same image (`true`), both timed from create to removal as `seg-time` times them
(evaluation/time_eval.run_once: `-m 8g`, `--network none`), and the anatomy of the run inside it: the steps
predict.py takes, timed in turn (this file copied beside the case and run as `python3 startup.py
--anatomy` in the image's /workspace). `--host` times the anatomy in this checkout's Python instead,
without Docker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when timing containers only: in the image this file runs with the stdlib alone
    from evaluation.time_eval import RunResult

ANATOMY_STEPS = (
    "import numpy", "import openvino", "import predict (router, models)", "routing table",
    "model pool and precision choice", "read + compile encoder and decoder", "read the case",
    "first encoder inference", "first decode + postprocessing", "steady encoder inference",
    "steady decode + postprocessing", "write segs",
)


def anatomy(case: Path, output: Path) -> dict[str, float]:
    """Seconds of each ANATOMY_STEPS step for one 2D case, in the order predict.py takes them (the app
    folder must be the working directory or on sys.path). Only the standard library is imported before."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now

    import numpy as np

    lap("import numpy")
    import openvino  # noqa: F401

    lap("import openvino")
    import predict  # noqa: F401
    from models.hardware import cpu_budget
    from models.pool import ModelPool
    from models.registry import model_dir
    from router.casefile import read_case, write_segs
    from router.modality import parse_case_name
    from router.routing import RoutingTable

    lap("import predict (router, models)")
    table = RoutingTable.load()
    lap("routing table")
    pool = ModelPool(model_dir(), cpu_budget(), "auto", 1 << 30)
    route = table.route(*parse_case_name(case.name), pool.available)
    lap("model pool and precision choice")
    predictor = pool.get(route.model)
    lap("read + compile encoder and decoder")
    loaded = read_case(case)
    boxes = loaded.boxes[:1]
    lap("read the case")
    predictor.set_image(loaded.image)
    lap("first encoder inference")
    masks = predictor.predict(boxes)
    lap("first decode + postprocessing")
    predictor.set_image(loaded.image)
    lap("steady encoder inference")
    masks = predictor.predict(boxes)
    lap("steady decode + postprocessing")
    write_segs(output / case.name, masks[0].astype(np.uint8))
    lap("write segs")
    return seconds


class _ContainerTimer:
    """Runs of `image` with `inputs` and `outputs` mounted, through seg-time's run_once."""

    def __init__(self, image: str, inputs: Path, outputs: Path) -> None:
        import docker
        from evaluation.time_eval import parse_args

        self.client = docker.from_env(timeout=120)
        self.options = parse_args(["-i", str(inputs), "-o", str(outputs), "--image", image])
        self.inputs, self.outputs = inputs, outputs

    def _run(self, command: list[str]) -> RunResult:
        from evaluation.time_eval import run_once

        run = run_once(self.client, self.options, command, self.inputs, self.outputs, f"startup_{os.getpid()}")
        if run.status != "ok":
            raise SystemExit(f"error: {' '.join(command)} in {self.options.image}: {run.status}\n{run.log[-2000:]}")
        return run

    def seconds(self, command: list[str]) -> float:
        return self._run(command).seconds

    def output(self, command: list[str]) -> str:
        return self._run(command).log


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", type=Path, required=True, help="a 2DBox_ case .npz (its first box is decoded)")
    parser.add_argument("--image", default="seg:latest")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--host", action="store_true", help="the anatomy in this Python, no Docker")
    parser.add_argument("--anatomy", action="store_true", help=argparse.SUPPRESS)  # inside the container
    args = parser.parse_args(argv)
    if args.anatomy:
        sys.path.insert(0, os.getcwd())  # the app folder (/workspace in the image), not this file's
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(anatomy(args.case, Path(out))))
        return 0
    case = args.case.resolve()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        inputs, outputs = Path(work) / "inputs", Path(work) / "outputs"
        inputs.mkdir()
        outputs.mkdir()
        outputs.chmod(0o777)  # the image runs as a non-root user
        shutil.copy(case, inputs / case.name)
        for _ in range(args.runs):
            if args.host:
                done = subprocess.run([sys.executable, __file__, "--anatomy", "--case", str(case)], check=True,
                                      capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
                output = done.stdout
            else:
                from evaluation.time_eval import CHALLENGE_COMMAND

                container = _ContainerTimer(args.image, inputs, outputs)
                rows.setdefault("container run (sh predict.sh)", []).append(container.seconds(CHALLENGE_COMMAND))
                rows.setdefault("empty container (true)", []).append(container.seconds(["true"]))
                shutil.copy(__file__, inputs / "startup.py")  # beside the case for this run only
                output = container.output(["python3", "/workspace/inputs/startup.py", "--anatomy", "--case",
                                           f"/workspace/inputs/{case.name}"])
                (inputs / "startup.py").unlink()
            steps = json.loads(output.strip().splitlines()[-1])
            for step in ANATOMY_STEPS:
                rows.setdefault(step, []).append(steps[step])
    where = "this Python" if args.host else args.image
    print(f"{case.name}, {where}: seconds, median (min) of {args.runs} runs")
    for step, values in rows.items():
        print(f"  {step:<40} {_summary(values)}")
    anatomy_total = [sum(rows[step][run] for step in ANATOMY_STEPS) for run in range(args.runs)]
    print(f"  {'anatomy, all steps':<40} {_summary(anatomy_total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
