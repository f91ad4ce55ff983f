"""Images and label maps the project makes or ships, for the demo, INT8 calibration, benchmarks and tests.

Build and development time only (it needs `tifffile` and the `stardist` wheel's data files); the
runtime (predict.py, router/, models/ without models/export) never imports it.
"""
