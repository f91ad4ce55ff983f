"""The memory guard's estimate against each case's real peak: `python -m benchmarks.memory CASE.npz ...`.

Each case runs in a fresh process: models compiled, VmRSS read, the peak (VmHWM) reset through
/proc/self/clear_refs, the case segmented through router.pipeline.Segmenter.segment_file, VmHWM read again. The
peak above the resident memory before the case is what router.memory.estimate_case bounds.
`--big` adds benchmarks.big_cases' (100, 512, 512) volume and 2048x2048 image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 1 << 20


def _vm(field: str) -> int:
    from router.memory import proc_kib_field

    value = proc_kib_field(Path("/proc/self/status"), field)
    if value is None:
        raise RuntimeError(f"{field} not in /proc/self/status")
    return value


def measure_one(path: Path, precision: str, threads: int) -> dict[str, object]:
    """Segment `path` in this process; return its estimate and its measured peak above the start, bytes."""
    from models.pool import ModelPool
    from router.casefile import open_case
    from router.memory import Warmth, estimate_case
    from router.pipeline import BOXES_MAX_BYTES, Segmenter
    from router.routing import RoutingTable

    table = RoutingTable.load(None)
    pool = ModelPool(None, threads, precision)
    with open_case(path) as case_file:  # the guard's view: headers and boxes, the image not decompressed
        route = table.route(case_file.dim, case_file.modality, pool.available)
        predictor = pool.get(route.model)
        headers = case_file.headers
        boxes = case_file.small_array("boxes", BOXES_MAX_BYTES)
    estimate = estimate_case(case_file.dim, headers, boxes, route, Warmth(), predictor.cache.budget_bytes).by_batch[
        predictor.decode_batch]
    before = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    with tempfile.TemporaryDirectory() as folder:
        Segmenter(table, pool, None).segment_file(path, Path(folder) / path.name)
    peak = _vm("VmHWM") - before
    return {"case": path.stem, "shape": list(headers["imgs"].shape), "boxes": 0 if boxes is None else len(boxes),
            "route": route.strategy, "estimate": estimate, "peak": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", type=Path)
    parser.add_argument("--big", action="store_true", help="add the big volume and big image (benchmarks.big_cases)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child: one case, JSON out
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.cases[0], args.precision, args.threads)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        cases = list(args.cases)
        if args.big:
            from benchmarks.big_cases import make_big_image, make_big_volume

            cases += [make_big_volume(Path(folder)), make_big_image(Path(folder))[0]]
        print("| case | shape | boxes | strategy | estimate MiB | peak MiB | estimate / peak |")
        print("|---|---|---|---|---|---|---|")
        worst = float("inf")
        for case in cases:
            command = [sys.executable, "-m", "benchmarks.memory", "--one", "--precision", args.precision,
                       "--threads", str(args.threads), str(case)]
            row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            ratio = row["estimate"] / max(row["peak"], 1)
            worst = min(worst, ratio)
            print(f"| {row['case']} | {tuple(row['shape'])} | {row['boxes']} | {row['route']} | "
                  f"{row['estimate'] / MIB:.0f} | {row['peak'] / MIB:.0f} | {ratio:.2f} |", flush=True)
        print(f"lowest estimate / peak: {worst:.2f}")
    return 0 if worst >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
