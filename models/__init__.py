"""Model registry, pre/post-processing and the OpenVINO predictor (runtime: no torch)."""
