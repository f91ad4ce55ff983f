"""Case I/O, modality routing and segmentation strategies (runtime: numpy, opencv, openvino only)."""
