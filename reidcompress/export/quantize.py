"""INT8 for ONNX Runtime: static QDQ quantisation calibrated on target-domain images.

``onnxruntime.quantization.quant_pre_process`` (shape inference and graph optimisation), then
``quantize_static`` in QDQ format: QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into
integer kernels, symmetric int8 weights per output channel, asymmetric uint8 activations. uint8
activations because x86 VNNI (``vpdpbusd``) multiplies unsigned by signed bytes: ORT's u8s8 kernels
use it, and a symmetric s8s8 model ran no faster than fp32 on these CPUs (REFERENCE.md section 7;
TensorRT, which wants symmetric int8, builds its own INT8 engine from the fp32 ONNX instead).

The calibration batches come from ``export.calibration``, the pipeline TensorRT INT8 calibration
uses, preprocessed exactly as evaluation. Calibration runs one batch at a time (ORT's strided
calibration), so histogram methods do not hold every activation of every image in memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from reidcompress._io import atomic_path, require_file
from reidcompress.errors import InputError
from reidcompress.export._input import graph_input
from reidcompress.export.parity import ParityReport, check_parity

__all__ = ["CALIB_METHODS", "QuantizeResult", "quantize_onnx", "check_calib_method", "count_qdq"]

CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_MIN_COSINE = 0.98


def check_calib_method(method: str) -> str:
    if method not in CALIB_METHODS:
        raise InputError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    return method


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    method: str
    images: int
    nodes: dict[str, int]
    parity: ParityReport | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": str(self.path),
            "calib_method": self.method,
            "calib_images": self.images,
            "nodes": self.nodes,
            "parity_to_fp32": None if self.parity is None else self.parity.to_dict(),
        }

    def summary(self) -> str:
        q, dq = self.nodes.get("QuantizeLinear", 0), self.nodes.get("DequantizeLinear", 0)
        head = (
            f"wrote {self.path} (QDQ: {q} QuantizeLinear / {dq} DequantizeLinear, uint8 activations, "
            f"per-channel int8 weights, {self.method} calibration on {self.images} images)"
        )
        return head if self.parity is None else f"{head}; vs fp32 ONNX: {self.parity.summary()}"


def _reader(batches: Sequence[np.ndarray], input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the batches; ``set_range`` lets ORT calibrate one slice at a time."""

        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: np.ascontiguousarray(b, dtype=np.float32)}

    return Reader()


def _rebatch(batches: Sequence[np.ndarray], fixed: int | None) -> list[np.ndarray]:
    """A static-batch model takes batches of exactly its size (the remainder is dropped)."""
    if not fixed:
        return list(batches)
    images = np.concatenate(list(batches))
    return [images[i : i + fixed] for i in range(0, len(images) - fixed + 1, fixed)]


def count_qdq(proto: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each quantisation op type the graph has."""
    ops = [n.op_type for n in proto.graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "DequantizeLinear")}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantiser logs warnings on the root logger (e.g. per tensor left in float); the summary
    says what was quantised."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize(fp32: Path, out: Path, batches: list[np.ndarray], method: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from reidcompress.export.onnx import decode_metadata

    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    proto = onnx.load(str(fp32))
    input_name = proto.graph.input[0].name
    # Calibration sees what the graph takes (``export --input normalized`` graphs: normalised images).
    meta = decode_metadata({m.key: m.value for m in proto.metadata_props})
    batches = [graph_input(b, meta) for b in batches]
    with tempfile.TemporaryDirectory(prefix="reidcompress-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        # The histogram calibrators print to stdout, which `--json` reserves for the result.
        with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(pre),
                str(out),
                _reader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calib,
                extra_options={"CalibStridedMinMax": 1},
            )


def _metadata(fp32: onnx.ModelProto, method: str, images: int) -> dict[str, str]:
    from reidcompress.export.onnx import META_PREFIX

    meta = {m.key: m.value for m in fp32.metadata_props}
    meta[META_PREFIX + "precision"] = "int8"
    meta[META_PREFIX + "quantization"] = json.dumps(
        {
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "activations": "uint8 (asymmetric, per tensor)",
            "weights": "int8 (symmetric, per channel)",
            "calib_method": method,
            "calib_images": images,
        }
    )
    return meta


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calib_batches: Sequence[np.ndarray],
    *,
    method: str = "minmax",
    parity_images: np.ndarray | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> QuantizeResult:
    """Write a statically quantised INT8 (QDQ) copy of an fp32 ONNX model, calibrated on ``calib_batches``.

    The reidcompress metadata is kept (``precision`` becomes ``int8``; the source checkpoint's hash
    stays, so ``verify`` compares its embeddings with the fp32 model's). With ``parity_images`` the
    INT8 embeddings are compared with the fp32 ones and nothing is written unless every cosine is at
    least ``min_cosine`` (ExportError).
    """
    from reidcompress.export.onnx import ExportError
    from reidcompress.runtime.onnx_backend import OnnxEmbedder

    src = require_file(fp32_path, "ONNX model")
    check_calib_method(method)
    if not calib_batches:
        raise InputError("INT8 calibration needs at least one batch of images")
    proto = onnx.load(str(src))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batches = _rebatch(calib_batches, dim0.dim_value if dim0.HasField("dim_value") else None)
    if not batches:
        raise InputError(f"INT8 calibration needs at least one batch of the model's fixed batch size {dim0.dim_value}")
    images = sum(len(b) for b in batches)
    with atomic_path(out) as tmp:
        _quantize(src, tmp, batches, method)
        quantized = onnx.load(str(tmp))
        del quantized.metadata_props[:]
        for key, value in _metadata(proto, method, images).items():
            quantized.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(quantized)
        onnx.save(quantized, str(tmp))
        parity = None
        if parity_images is not None:
            with OnnxEmbedder(src) as fp32, OnnxEmbedder(tmp) as int8:
                parity = check_parity(fp32, int8, parity_images, min_cosine)
            if not parity.passed:
                raise ExportError(f"the INT8 model's embeddings differ too much from fp32: {parity.summary()}")
    return QuantizeResult(Path(out), method, images, count_qdq(quantized), parity)
