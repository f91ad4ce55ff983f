"""How long a viewer waits for seg-serve's answer to one 2D box: the first box after an upload, then once encoded.

    python -m benchmarks.serve_latency [--cases ../shared/data/dev-fullfov] [--precision fp32] [--threads 2] \
        [--wait 5] [--max-isa AVX2] [--config ROUTES.toml] [--baseline ROUTES.toml] [--out latency.csv]

Starts a real `seg-serve` (`python -m serve`) on a free loopback port and drives it through nninteractive-client,
as napari-nninteractive and SlicerNNInteractive do. For each 3DBox_*.npz of CASES/imgs (or of CASES itself), in
turn: set_image of the volume (modality from the file name), set_target_buffer, WAIT seconds, then one 2D box per
structure: the tight box of its ground truth (CASES/gts/<case>.npz, label i for boxes[i-1]) on the slice nearest
the middle of its z range that holds some of it; without ground truth, the middle slice of its 3D box. Timed per
answer (the client's add_bbox_interaction, HTTP and the buffer update included):
- first: the first structure's box, WAIT s after the upload, while the server still encodes the volume's slices
  in the background (nearest the middle first);
- once the server logs that every slice is encoded ("background encoding done", read from its log), every
  structure's box again, each after reset_interactions: their median and p95, and the box of the largest
  structure (most voxels of its ground truth, else of its 3D box).
Prints one row per case (shape, seconds to upload, first, encoded after, median, p95, largest) under the CPU
(lscpu's model name), its class (AMX, AVX-512 or AVX2), the precision and the threads. The client's read timeout
is raised to 600 s, so a first box slower than its default 60 s is measured (and marked) rather than failed.
`--max-isa AVX2` runs the server with oneDNN limited to that ISA (ONEDNN_MAX_CPU_ISA): emulated, ratios only.
`--config` is the routing table of the server measured (default: the shipped one); `--baseline` adds a second
server on another table, run on the same cases after the first, and prints its rows beside the first's (e.g. a
table with `one_box_step = 1`: every slice of an object walked, as before looking ahead).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ROOT.parent / "shared" / "data" / "dev-fullfov"
CLIENT_READ_TIMEOUT = 60.0  # nninteractive-client's default: a slower answer fails in the viewer
ENCODED = re.compile(r"background encoding (done|stopped)[^\n]*")


def lscpu_model(text: str) -> str:
    """The "Model name:" of `lscpu`'s output; "unknown" when it has none."""
    match = re.search(r"^\s*Model name:\s*(.+?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def isa_class(flags: frozenset[str]) -> str:
    """The widest x86 matrix or vector extension OpenVINO's CPU plugin can use here, from /proc/cpuinfo's
    flags: "AMX", "AVX-512", "AVX2", "below AVX2"; "unknown" without flags."""
    if not flags:
        return "unknown"
    if "amx_tile" in flags or "amx_bf16" in flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "below AVX2"


def percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) percentile of `values`."""
    return float(np.percentile(np.asarray(values, float), q))


def middle_slice(truth: np.ndarray) -> int:
    """The slice of (D, H, W) bool `truth` nearest the middle of its z range that holds some of it."""
    slices = np.flatnonzero(truth.any(axis=(1, 2)))
    middle = (slices[0] + slices[-1]) / 2
    return int(slices[np.argmin(np.abs(slices - middle))])


def slice_box(z: int, y0: int, y1: int, x0: int, x1: int, shape: tuple[int, ...]) -> list[list[int]]:
    """The client's bbox_coords of an inclusive in-plane box on slice z: half-open [z, z+1], [y0, y1+1],
    [x0, x1+1], each in-plane side at least 2 wide (a side of 1 would make a second axis of extent 1)."""
    def side(low: int, high: int, size: int) -> list[int]:
        low, high = max(0, low), min(size, high + 1)
        if high - low < 2:
            low, high = (low, low + 2) if low + 2 <= size else (max(0, high - 2), high)
        return [low, high]

    return [[z, z + 1], side(y0, y1, shape[1]), side(x0, x1, shape[2])]


def structure_boxes(boxes: np.ndarray, gts: np.ndarray | None, shape: tuple[int, ...]
                    ) -> list[tuple[list[list[int]], int]]:
    """Per structure, (its 2D box as bbox_coords, its size in voxels): from ground truth label i for boxes[i-1]
    (tight box on its middle slice, voxel count) where there is some, else from the 3D box (its middle slice,
    its volume)."""
    out = []
    for label, box in enumerate(np.asarray(boxes, np.int64), start=1):
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        truth = gts == label if gts is not None else None
        if truth is not None and truth.any():
            z = middle_slice(truth)
            rows, cols = np.flatnonzero(truth[z].any(axis=1)), np.flatnonzero(truth[z].any(axis=0))
            out.append((slice_box(z, int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]), shape),
                        int(truth.sum())))
        else:
            z = (z0 + z1) // 2
            out.append((slice_box(z, y0, y1, x0, x1, shape), (x1 - x0 + 1) * (y1 - y0 + 1) * (z1 - z0 + 1)))
    return out


@dataclass
class CaseLatency:
    case: str
    shape: tuple[int, ...]
    boxes: int
    upload: float
    first: float
    encoded_after: float  # seconds from set_image's answer to the server's "encoded" log line
    encoded_note: str
    median: float
    p95: float
    largest: float


class Server:
    """A `python -m serve` subprocess on a free loopback port, its log in a file."""

    def __init__(self, precision: str, threads: int, max_isa: str | None, log: Path, config: Path | None = None
                 ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.url, self.log = f"http://127.0.0.1:{port}", log
        env = dict(os.environ)
        if max_isa:
            env["ONEDNN_MAX_CPU_ISA"] = max_isa
        self._handle = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve", "--port", str(port), "--precision", precision, "--threads", str(threads),
             "--max-sessions", "1", "--idle-timeout", "3600", "--liveness-timeout", "600",
             *(["--config", str(config.resolve())] if config else [])],
            cwd=ROOT, stdout=self._handle, stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, seconds: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"seg-serve did not start:\n{self.text()[-2000:]}")
            time.sleep(0.2)

    def wait_encoded(self, after: int, seconds: float = 1800) -> str:
        """The first "background encoding done/stopped" line logged past offset `after`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if match := ENCODED.search(self.text(), after):
                return match.group(0)
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"seg-serve never logged that the volume is encoded:\n{self.text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._handle.close()


def run_case(server: Server, case: Path, gt: Path | None, wait: float) -> CaseLatency:
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    with np.load(case, allow_pickle=False) as data:
        volume, boxes = data["imgs"], data["boxes"]
        spacing = [float(v) for v in data["spacing"]][::-1] if "spacing" in data else None  # (z, y, x)
    gts = None
    if gt is not None and gt.is_file():
        with np.load(gt, allow_pickle=False) as data:
            gts = data["gts"]
    prompts = structure_boxes(boxes, gts, volume.shape)
    modality = case.name.split("_")[1] if case.name.count("_") >= 2 else "CT"
    properties: dict[str, object] = {"modality": modality}
    if spacing:
        properties["spacing"] = spacing

    session = nnInteractiveRemoteInferenceSession(server.url, read_timeout=600.0)
    try:
        offset = len(server.text())
        clock = time.perf_counter()
        session.set_image(volume[None], properties)
        upload = time.perf_counter() - clock
        uploaded = time.monotonic()
        session.set_target_buffer(np.zeros(volume.shape, np.uint8))
        time.sleep(max(0.0, wait - (time.monotonic() - uploaded)))
        clock = time.perf_counter()
        session.add_bbox_interaction(prompts[0][0], include_interaction=True)
        first = time.perf_counter() - clock
        note = server.wait_encoded(offset)
        encoded_after = time.monotonic() - uploaded
        seconds = []
        for coords, _ in prompts:
            session.reset_interactions()
            clock = time.perf_counter()
            session.add_bbox_interaction(coords, include_interaction=True)
            seconds.append(time.perf_counter() - clock)
    finally:
        session.close()
    largest = max(range(len(prompts)), key=lambda i: prompts[i][1])
    return CaseLatency(case.name.removesuffix(".npz"), tuple(volume.shape), len(prompts), upload, first,
                       encoded_after, note, statistics.median(seconds), percentile(seconds, 95), seconds[largest])


def cpu_line(precision: str, threads: int, max_isa: str | None) -> str:
    from models.hardware import cpu_flags

    try:
        model = lscpu_model(subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout)
    except OSError:
        model = "unknown"
    isa = isa_class(cpu_flags())
    where = f"emulated {max_isa} (ONEDNN_MAX_CPU_ISA) on {isa}" if max_isa else f"{isa}, native"
    return f"CPU: {model} ({where}); precision {precision}; {threads} threads; load {os.getloadavg()[0]:.2f}"


def run_server(args: argparse.Namespace, label: str, config: Path | None, cases: list[Path], folder: Path,
               log: Path) -> list[CaseLatency]:
    """Every case on one seg-serve with routing table `config` (None: the shipped one), in turn."""
    server = Server(args.precision, args.threads, args.max_isa, log, config)
    rows = []
    try:
        server.wait_healthy()
        for case in cases:
            gt = folder.parent / "gts" / case.name if folder.name == "imgs" else None
            rows.append(run_case(server, case, gt, args.wait))
            print(f"{label} {rows[-1].case}: first {rows[-1].first:.2f} s, {rows[-1].encoded_note}", file=sys.stderr)
    except Exception:
        print(f"seg-serve's log:\n{server.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES,
                        help="a folder of 3DBox_*.npz, or with imgs/ (and gts/) in it")
    parser.add_argument("--precision", default="fp32", help="seg-serve's --precision (the issue's target: fp32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait", type=float, default=5.0, help="seconds between the upload and the first box")
    parser.add_argument("--max-isa", default=None, help="e.g. AVX2: the server's ONEDNN_MAX_CPU_ISA (emulated)")
    parser.add_argument("--only", default=None, help="only the cases whose name contains this")
    parser.add_argument("--config", type=Path, default=None, help="routing table of the server measured")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="routing table of a second server, run after the first and printed beside it")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this CSV")
    args = parser.parse_args(argv)

    folder = args.cases / "imgs" if (args.cases / "imgs").is_dir() else args.cases
    cases = sorted(p for p in folder.glob("3DBox_*.npz") if not args.only or args.only in p.name)
    if not cases:
        print(f"error: no 3DBox_*.npz in {folder}", file=sys.stderr)
        return 2
    header = cpu_line(args.precision, args.threads, args.max_isa)
    tables = {"measured": args.config, **({"baseline": args.baseline} if args.baseline else {})}
    rows: dict[str, list[CaseLatency]] = {}
    with tempfile.TemporaryDirectory() as work:
        for label, config in tables.items():
            rows[label] = run_server(args, label, config, cases, folder, Path(work) / f"{label}.log")

    print(header)
    for label, config in tables.items():
        print(f"{label}: routing table {config or 'router/routes.toml (shipped)'}")
    print(f"first box {args.wait:g} s after the upload; then, once encoded, one box per structure (seconds)")
    names = ("case", "table", "shape (D,H,W)", "boxes", "upload", "first", "encoded after", "median", "p95",
             "largest")
    print(f"{names[0]:30s} {names[1]:>9s} {names[2]:>14s} {names[3]:>5s} {names[4]:>7s} {names[5]:>7s} "
          f"{names[6]:>13s} {names[7]:>7s} {names[8]:>7s} {names[9]:>7s}")
    for index in range(len(cases)):
        for label in tables:
            row = rows[label][index]
            late = "!" if row.first > CLIENT_READ_TIMEOUT else " "
            shape = "x".join(str(side) for side in row.shape)
            print(f"{row.case:30s} {label:>9s} {shape:>14s} {row.boxes:5d} {row.upload:7.2f} {row.first:6.2f}{late} "
                  f"{row.encoded_after:13.1f} {row.median:7.2f} {row.p95:7.2f} {row.largest:7.2f}")
        if "baseline" in rows:
            measured, baseline = rows["measured"][index], rows["baseline"][index]
            print(f"{'':30s} {'ratio':>9s} {'':>14s} {'':>5s} {'':>7s} {measured.first / baseline.first:7.2f} "
                  f"{'':>13s} {measured.median / baseline.median:7.2f} {measured.p95 / baseline.p95:7.2f} "
                  f"{measured.largest / baseline.largest:7.2f}")
    if any(row.first > CLIENT_READ_TIMEOUT for table in rows.values() for row in table):
        print(f"! over the client's default {CLIENT_READ_TIMEOUT:g} s read timeout")
    if args.out:
        with args.out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "table", "shape", "boxes", "upload_s", "first_s", "encoded_after_s", "median_s",
                             "p95_s", "largest_s", "cpu"])
            for label, table in rows.items():
                for row in table:
                    writer.writerow([row.case, label, "x".join(map(str, row.shape)), row.boxes, f"{row.upload:.3f}",
                                     f"{row.first:.3f}", f"{row.encoded_after:.1f}", f"{row.median:.3f}",
                                     f"{row.p95:.3f}", f"{row.largest:.3f}", header])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
