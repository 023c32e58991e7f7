"""TensorRT engines through the name-based tensor API of TensorRT 10 and 11, with Polygraphy's CUDA buffers (no pycuda).

Each I/O tensor's dtype is read from the engine: a strongly typed engine takes and returns whatever
its ONNX model declared (fp32 for reidcompress's models, whose FP16 and Q/DQ variants keep fp32 I/O).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reidcompress.errors import CheckpointError, InputError
from reidcompress.formats.engine_sidecar import check_engine_compatible, read_sidecar, require_tensorrt, runtime_info
from reidcompress.formats.input_format import graph_input
from reidcompress.runtime.base import Embedder, register_backend

__all__ = ["TrtEmbedder"]


class TrtEmbedder(Embedder):
    backend = "tensorrt"

    def __init__(self, path: str | Path) -> None:
        sidecar = read_sidecar(path)
        require_tensorrt()
        check_engine_compatible(sidecar, runtime_info())
        import tensorrt as trt
        from polygraphy import cuda

        self._cuda = cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise CheckpointError(f"{path}: TensorRT could not deserialize the engine (corrupt file?)")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._output)))
        self._stream = cuda.Stream()
        self.sidecar = sidecar
        self.metadata: dict[str, Any] = dict(sidecar)
        self.input_size = (int(sidecar["input_size"][0]), int(sidecar["input_size"][1]))
        self.name = Path(path).name
        self.device = f"cuda ({sidecar.get('gpu_name', '?')})"
        self.max_batch = int(sidecar.get("max_batch", 1))
        self.min_batch = int(sidecar.get("min_batch", 1))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "precision": self.sidecar.get("precision"),
            "tensorrt_version": self.sidecar.get("tensorrt_version"),
        }

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(graph_input(batch, self.metadata), dtype=self._in_dtype)
        if len(x) > self.max_batch:
            return np.concatenate([self.embed(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)])
        if len(x) < self.min_batch:
            raise InputError(f"batch {len(x)} is below the engine's profile minimum {self.min_batch}")
        return self._infer(x)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        self.context.set_input_shape(self._input, x.shape)
        dims = self.context.get_tensor_shape(self._output)
        out_shape = tuple(int(dims[i]) for i in range(len(dims)))
        d_in = cuda.DeviceArray(shape=x.shape, dtype=self._in_dtype)
        d_out = cuda.DeviceArray(shape=out_shape, dtype=self._out_dtype)
        try:
            d_in.copy_from(x, stream=self._stream)
            self.context.set_tensor_address(self._input, d_in.ptr)
            self.context.set_tensor_address(self._output, d_out.ptr)
            if not self.context.execute_async_v3(self._stream.ptr):
                raise CheckpointError(f"{self.name}: TensorRT execution failed")
            host = np.empty(out_shape, dtype=self._out_dtype)
            d_out.copy_to(host, stream=self._stream)
            self._stream.synchronize()
            return host.astype(np.float32, copy=False)
        finally:
            d_in.free()
            d_out.free()

    def close(self) -> None:
        self._stream.free()


@register_backend(".engine", ".plan")
def _open_engine(path: Path, **_: Any) -> TrtEmbedder:
    return TrtEmbedder(path)
