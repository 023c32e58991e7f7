"""ONNX models in ONNX Runtime: CPU by default, CUDA or TensorRT execution providers when asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import require_file
from reidcompress.errors import BackendUnavailableError, CheckpointError, InputError
from reidcompress.formats.input_format import graph_input
from reidcompress.formats.onnx_metadata import decode_metadata
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


def _session(path: Path, device: str, threads: int | None, spinning: bool, fake_quant: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if fake_quant:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=_providers(device))
    except (BackendUnavailableError, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
        raise CheckpointError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None


class OnnxEmbedder(Embedder):
    """An ONNX model in an ONNX Runtime session.

    ``spinning=False`` stops the intra-op worker threads from spin-waiting after each run. Timing
    needs it when several sessions share the cores (interleaved comparisons): the spinning workers of
    the session that just ran would take the cores from the next one (measured here: batch-1 ResNet50
    fp32 32 -> 58 ms and INT8 11 -> 33 ms when two sessions alternate with spinning on).

    ``fake_quant=True`` turns off ORT's QDQ fusion (``session.disable_quant_qdq``): each Q/DQ pair runs
    as float rounding and clamping, the arithmetic of TensorRT's INT8 kernels, instead of this CPU's
    integer kernels (which saturate on x86 without VNNI). ``None`` (the default) does so exactly for
    models whose metadata says INT8 format ``trt``, so ``evaluate`` and ``verify`` show the accuracy a
    TensorRT engine built from it will have.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "cpu",
        threads: int | None = None,
        spinning: bool = True,
        fake_quant: bool | None = None,
    ) -> None:
        p = require_file(path, "ONNX model")
        self.session = _session(p, device, threads, spinning, bool(fake_quant))
        self.metadata: dict[str, Any] = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        if fake_quant is None and self.metadata.get("int8_format") == "trt":
            self.session = _session(p, device, threads, spinning, True)
        self.fake_quant = bool(fake_quant) or (fake_quant is None and self.metadata.get("int8_format") == "trt")
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        size = self.metadata.get("input_size") or inp.shape[2:4]
        if not all(isinstance(v, int) for v in size):
            raise CheckpointError(f"{p}: the model's input size is unknown (no metadata, dynamic H/W)")
        self.input_size = (int(size[0]), int(size[1]))
        self.name = p.name
        self.device = self.session.get_providers()[0].removesuffix("ExecutionProvider").lower()
        self.threads = threads

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "precision": self.metadata.get("precision", "fp32"), "threads": self.threads}
        if info["precision"] == "int8":
            info["int8_format"] = self.metadata.get("int8_format", "u8s8")
            info["int8_arithmetic"] = "fake-quant" if self.fake_quant else "integer kernels"
        return info

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
    path: Path,
    device: str = "cpu",
    threads: int | None = None,
    spinning: bool = True,
    fake_quant: bool | None = None,
    **_: Any,
) -> OnnxEmbedder:
    return OnnxEmbedder(path, device=device, threads=threads, spinning=spinning, fake_quant=fake_quant)
