"""One inference interface over every backend: ``embed(batch) -> embeddings``.

Evaluation, verification and benchmarks take any model file and pick the backend by file type:
``.pt``/``.pth``/``.safetensors`` (PyTorch), ``.onnx`` (ONNX Runtime), ``.engine`` (TensorRT).
"""

from __future__ import annotations

from reidcompress.runtime import onnx_backend, trt_backend  # noqa: F401 - register their suffixes
from reidcompress.runtime.base import Embedder, load_embedder, register_backend
from reidcompress.runtime.torch_backend import TorchEmbedder

__all__ = ["Embedder", "TorchEmbedder", "load_embedder", "register_backend"]
