"""Developer benchmark: speed, memory and accuracy of the OpenVINO pipeline against the PyTorch baseline.

Build and evaluation time only (the product is router/ and models/; evaluation/ scores predictions).

    python -m benchmarks --help

runner      the CLI, and one fresh child process per (case, method)
big_cases   the synthetic big volume and big image (memory and many-box figures)
roofline    encoder FLOPs, the CPU's theoretical peaks and a measured MatMul roof
report      tables, summaries and the CSV
baseline_torch   the challenge's official LiteMedSAM procedure in PyTorch
"""
