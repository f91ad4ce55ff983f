"""INT8 encoders on this CPU's int8 kernels against the same networks computed exactly, and their speed.

    python -m benchmarks.int8_arithmetic [--encoder NAME=INT8.xml ...] [--repeats 15]

Without an int8 dot product (VNNI, AMX) oneDNN adds pairs of u8 x s8 products in a saturating int16, so an
INT8 IR computes something other than the network its recipe was validated as; with one, the kernels are
exact. This prints, per INT8 encoder (default: the built one, models/ir): the embedding cosine to FP32 on
three images none was calibrated on (the stardist nuclei, a synthetic CT and MR slice) and the mask
agreement with FP32 on the control slices of sarcoma patients 12-14 (models.export.qat.CONTROL_PATIENTS),
each on the CPU's kernels and exact (models.export.quantize.EXACT_INT8_CONFIG); then the encoder's ms per
slice, FP32 against each INT8, in alternating rounds. Results: docs/results.md, "INT8 without VNNI".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.hardware import cpu_budget, cpu_class, cpu_flags, cpu_has_bf16, int8_is_exact
from models.registry import get_spec, model_dir

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays of the same size, in float64."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def probe_inputs() -> list[np.ndarray]:
    """Encoder inputs (1, 3, 256, 256) of images no INT8 recipe calibrates on: stardist's nuclei (cropped
    views of it are calibration images, the whole image too), a seeded synthetic CT and MR slice."""
    from models.transforms import preprocess
    from sample_data.stardist import stardist_nuclei
    from sample_data.synthetic import synthetic_ct, synthetic_mr

    spec = get_spec("litemedsam")
    ct, _ = synthetic_ct(np.random.default_rng(1))
    mr, _ = synthetic_mr(np.random.default_rng(1))
    return [preprocess(image, spec)[0] for image in (stardist_nuclei()[0], ct[20], mr[18])]


def median_ms(requests: dict[str, object], x: np.ndarray, repeats: int, rounds: int = 2) -> dict[str, list[float]]:
    """Median ms of one encoder call per request and round; rounds alternate between the requests."""
    result: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(rounds):
        for name, request in requests.items():
            for _ in range(3):  # warm-up
                request.infer({0: x})  # type: ignore[attr-defined]
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                request.infer({0: x})  # type: ignore[attr-defined]
                times.append(time.perf_counter() - start)
            result[name].append(1000 * float(np.median(times)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    import openvino as ov

    from models.export.qat import CONTROL_PATIENTS
    from models.export.quantize import EXACT_INT8_CONFIG, control_items, decode, mask_agreement

    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_arithmetic", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="IR folder with the FP32 encoder and decoder")
    parser.add_argument("--encoder", action="append", default=[], metavar="NAME=XML",
                        help="an INT8 encoder IR to compare (repeatable; default: the built one)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=cpu_budget())
    parser.add_argument("--control-every", type=int, default=1, help="use every Nth control slice (all: 1)")
    args = parser.parse_args(argv)

    spec, directory = get_spec("litemedsam"), Path(args.models or model_dir())
    encoders = dict(item.split("=", 1) for item in args.encoder) or {"built": str(directory / spec.encoder_int8_file)}
    flags = cpu_flags()
    row = cpu_class(cpu_has_bf16(), flags)
    print(f"CPU: {row.cpu if row else 'unknown'}; int8 kernels {'exact' if int8_is_exact(flags) else 'saturating'}; "
          f"{args.threads} threads")

    core = ov.Core()
    timing = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    fp32 = core.compile_model(directory / spec.encoder_file, "CPU", {**F32, **timing})
    decoder = core.compile_model(directory / spec.decoder_file, "CPU", F32).create_infer_request()
    items = control_items("litemedsam", patients=CONTROL_PATIENTS)[:: args.control_every]
    references = [decode(fp32(item.tensor)[0], item, decoder, "litemedsam") for item in items]
    inputs = probe_inputs()
    fp32_embeddings = [fp32(x)[0] for x in inputs]

    print("| INT8 encoder | arithmetic | cosine to fp32 (nuclei, CT, MR) | control agreement with fp32 |")
    print("|---|---|---|---|")
    requests = {"fp32": fp32.create_infer_request()}
    for name, xml in encoders.items():
        for mode, config in (("kernels", {**F32, **timing}), ("exact", EXACT_INT8_CONFIG)):
            compiled = core.compile_model(xml, "CPU", config)
            pairs = zip(fp32_embeddings, inputs, strict=True)
            cosines = ", ".join(f"{cosine(reference, compiled(x)[0]):.4f}" for reference, x in pairs)
            agreement, _ = mask_agreement(lambda x, c=compiled: c(x)[0], decoder, items, references, "litemedsam")
            print(f"| {name} | {mode} | {cosines} | {agreement:.4f} |")
            if mode == "kernels":
                requests[name] = compiled.create_infer_request()
    print(f"\nencoder ms per slice, {args.threads} threads, median of {args.repeats} per round:")
    for name, rounds in median_ms(requests, inputs[1], args.repeats).items():
        print(f"  {name}: " + ", ".join(f"{ms:.0f}" for ms in rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
