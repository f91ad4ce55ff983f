"""Case I/O, modality routing and segmentation strategies (runtime: numpy, openvino only)."""
