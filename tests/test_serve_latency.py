"""benchmarks.serve_latency's pure parts: the CPU line's parsing and class, and the 2D box per structure."""

from __future__ import annotations

import numpy as np

from benchmarks.serve_latency import isa_class, lscpu_model, percentile, slice_box, structure_boxes

LSCPU = """Architecture:             x86_64
  CPU op-mode(s):         32-bit, 64-bit
Vendor ID:                GenuineIntel
  Model name:             Intel(R) Xeon(R) Platinum 8488C
    CPU family:           6
"""


def test_cpu_model_and_class() -> None:
    assert lscpu_model(LSCPU) == "Intel(R) Xeon(R) Platinum 8488C"
    assert lscpu_model("Architecture: x86_64\n") == "unknown"
    assert isa_class(frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"})) == "AMX"
    assert isa_class(frozenset({"avx2", "avx512f", "avx512_bf16"})) == "AVX-512"
    assert isa_class(frozenset({"avx2", "fma"})) == "AVX2"
    assert isa_class(frozenset({"sse4_2"})) == "below AVX2"
    assert isa_class(frozenset()) == "unknown"
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0 and percentile([1.0, 3.0], 95) == 2.9


def test_one_2d_box_per_structure() -> None:
    shape = (10, 20, 30)
    gts = np.zeros(shape, np.uint8)
    gts[2:9, 4:10, 5:15] = 1  # z 2..8: middle slice 5
    gts[5, 12:16, 20:26] = 2
    gts[8, 12:14, 20:22] = 2  # label 2 on slices 5 and 8: the slice nearest 6.5 that holds it is 5
    boxes = np.array([[5, 4, 2, 14, 9, 8], [20, 12, 5, 25, 15, 8], [0, 0, 0, 29, 19, 9]])
    prompts = structure_boxes(boxes, gts, shape)
    assert prompts[0] == ([[5, 6], [4, 10], [5, 15]], 7 * 6 * 10)
    assert prompts[1] == ([[5, 6], [12, 16], [20, 26]], 24 + 4)
    assert prompts[2] == ([[4, 5], [0, 20], [0, 30]], 30 * 20 * 10)  # no ground truth: the 3D box's middle
    assert structure_boxes(boxes[:1], None, shape)[0][0] == [[5, 6], [4, 10], [5, 15]]
    assert slice_box(3, 7, 7, 29, 29, shape) == [[3, 4], [7, 9], [28, 30]]  # a side of 1 grows to 2, inside
