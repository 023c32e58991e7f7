"""On-disk formats that export writes and runtime reads: ONNX metadata and TensorRT engine sidecars.

Leaf modules: they import nothing from ``export`` or ``runtime``, so both can depend on them.
"""
