"""ONNX models in ONNX Runtime: CPU by default, CUDA or TensorRT execution providers when asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import require_file
from reidcompress.errors import BackendUnavailableError, CheckpointError, InputError
from reidcompress.export._input import graph_input
from reidcompress.runtime.base import Embedder, register_backend

__all__ = ["OnnxEmbedder", "PROVIDERS"]

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    kind = "cuda" if device.startswith("cuda") else device
    if kind == "auto":
        kind = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    if kind not in PROVIDERS:
        raise InputError(f"unknown ONNX Runtime device {device!r}; use cpu, cuda, tensorrt or auto")
    wanted = PROVIDERS[kind]
    if wanted[0] not in ort.get_available_providers():
        raise BackendUnavailableError(
            f"ONNX Runtime here has no {wanted[0]} (available: {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu for cuda/tensorrt"
        )
    return wanted


class OnnxEmbedder(Embedder):
    """An ONNX model in an ONNX Runtime session.

    ``spinning=False`` stops the intra-op worker threads from spin-waiting after each run. Timing
    needs it when several sessions share the cores (interleaved comparisons): the spinning workers of
    the session that just ran would take the cores from the next one (measured here: batch-1 ResNet50
    fp32 32 -> 58 ms and INT8 11 -> 33 ms when two sessions alternate with spinning on).
    """

    backend = "onnxruntime"

    def __init__(
        self, path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None, spinning: bool = True
    ) -> None:
        import onnxruntime as ort

        from reidcompress.export.onnx import decode_metadata

        p = require_file(path, "ONNX model")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=_providers(device))
        except (BackendUnavailableError, InputError):
            raise
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise CheckpointError(f"{p}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.metadata: dict[str, Any] = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        size = self.metadata.get("input_size") or inp.shape[2:4]
        if not all(isinstance(v, int) for v in size):
            raise CheckpointError(f"{p}: the model's input size is unknown (no metadata, dynamic H/W)")
        self.input_size = (int(size[0]), int(size[1]))
        self.name = p.name
        self.device = self.session.get_providers()[0].removesuffix("ExecutionProvider").lower()
        self.threads = threads

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.metadata.get("precision", "fp32"), "threads": self.threads}

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(graph_input(batch, self.metadata), dtype=self._dtype)
        fixed = self._fixed_batch
        if fixed is None or len(x) == fixed:
            return self._run(x)
        # A static-batch model runs in chunks of its batch, the last one zero-padded.
        outs = []
        for i in range(0, len(x), fixed):
            chunk = x[i : i + fixed]
            pad = np.zeros((fixed - len(chunk), *chunk.shape[1:]), chunk.dtype)
            outs.append(self._run(np.concatenate([chunk, pad]))[: len(chunk)])
        return np.concatenate(outs)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self._input: x})[0], dtype=np.float32)


@register_backend(".onnx")
def _open_onnx(
    path: Path, device: str = "cpu", threads: int | None = None, spinning: bool = True, **_: Any
) -> OnnxEmbedder:
    return OnnxEmbedder(path, device=device, threads=threads, spinning=spinning)
