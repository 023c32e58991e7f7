"""INT8 and FP16 copies of an fp32 ONNX model, for ONNX Runtime's CPU kernels and for TensorRT.

INT8: ``onnxruntime.quantization.quant_pre_process`` (shape inference, graph optimisation), then
``quantize_static`` in QDQ format, per-channel int8 weights, calibrated on target-domain images from
``export.calibration`` (the pipeline evaluation uses). The INT8 *format* depends on who runs the model
(``INT8_FORMATS``, ``detect_int8_format``): ONNX Runtime's integer kernels differ per CPU kind, and
TensorRT takes only symmetric int8 Q/DQ. One calibration, one module, four formats.

Each INT8 model is compared with fp32 twice: with ORT's integer kernels, and as float fake-quantization
(session option ``session.disable_quant_qdq = "1"``: each Q/DQ pair rounds and clamps in float, the
arithmetic TensorRT's int32-accumulating kernels follow). A model for this CPU is gated on the kernels;
the ``trt`` format, and a format chosen by hand for another CPU, on fake-quant (``gate_for``). A large
gap between the two is integer saturation in this CPU's kernels, not a bad calibration, and the error
says so.

FP16 (``convert_fp16``): onnxconverter-common with fp32 I/O, the normalisation and the embedding head
in fp32, for a strongly typed TensorRT build (REFERENCE.md 9).

ONNX Runtime's quantiser was preferred to NVIDIA ModelOpt's ONNX PTQ for the ``trt`` format:
``nvidia-modelopt[onnx]`` 0.47 pins ``onnx~=1.21`` and ``onnxruntime-gpu~=1.24`` (the same module as
the CPU ``onnxruntime`` this project uses) and pulls ``cupy-cuda12x``; ``quantize_static`` with
symmetric activations already quantizes both inputs of every Add, so no graph surgery is written here.
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
from reidcompress.errors import ExportError, InputError
from reidcompress.export._fp16 import to_fp16
from reidcompress.export._int8_formats import (
    FORMAT_SPECS,
    INT8_FORMATS,
    check_int8_format,
    cpu_flags,
    detect_int8_format,
    gate_for,
)
from reidcompress.export.parity import ParityReport, check_parity
from reidcompress.formats.input_format import graph_input
from reidcompress.formats.onnx_metadata import META_PREFIX, decode_metadata

__all__ = [
    "CALIB_METHODS",
    "INT8_FORMATS",
    "Fp16Result",
    "QuantizeResult",
    "check_calib_method",
    "check_int8_format",
    "convert_fp16",
    "count_qdq",
    "detect_int8_format",
    "quantize_onnx",
]

CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_MIN_COSINE = 0.98
FP16_MIN_COSINE = 0.999


def check_calib_method(method: str, name: str = "--calib-method") -> str:
    if method not in CALIB_METHODS:
        raise InputError(f"{name} must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    return method


@dataclass(frozen=True)
class QuantizeResult:
    """An INT8 model; ``parity`` is the gate's report (``gate``: integer kernels or fake-quant)."""

    path: Path
    method: str
    images: int
    nodes: dict[str, int]
    fmt: str
    reason: str
    gate: str
    parity_kernels: ParityReport | None = None
    parity_fake_quant: ParityReport | None = None

    @property
    def parity(self) -> ParityReport | None:
        return self.parity_fake_quant if self.gate == "fake-quant" else self.parity_kernels

    def to_dict(self) -> dict[str, Any]:
        def rep(p: ParityReport | None) -> dict[str, Any] | None:
            return None if p is None else p.to_dict()

        return {
            "onnx": str(self.path),
            "int8_format": self.fmt,
            "format_reason": self.reason,
            "calib_method": self.method,
            "calib_images": self.images,
            "nodes": self.nodes,
            "gate": self.gate,
            "parity_to_fp32": rep(self.parity),
            "parity_integer_kernels": rep(self.parity_kernels),
            "parity_fake_quant": rep(self.parity_fake_quant),
        }

    def summary(self) -> str:
        q, dq = self.nodes.get("QuantizeLinear", 0), self.nodes.get("DequantizeLinear", 0)
        head = (
            f"wrote {self.path} (INT8 format {self.fmt}: {self.reason}; QDQ: {q} QuantizeLinear / "
            f"{dq} DequantizeLinear, {self.method} calibration on {self.images} images)"
        )
        if self.parity is None:
            return head
        other = self.parity_kernels if self.gate == "fake-quant" else self.parity_fake_quant
        tail = "" if other is None else f" (min cosine {other.min_cosine:.4f} as {_other(self.gate)})"
        return f"{head}; vs fp32 ONNX with {self.gate}: {self.parity.summary()}{tail}"


def _other(gate: str) -> str:
    return "integer kernels" if gate == "fake-quant" else "fake-quant"


@dataclass(frozen=True)
class Fp16Result:
    path: Path
    kept_fp32: tuple[str, ...]
    parity: ParityReport | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": str(self.path),
            "kept_fp32": list(self.kept_fp32),
            "parity_to_fp32": None if self.parity is None else self.parity.to_dict(),
        }

    def summary(self) -> str:
        head = f"wrote {self.path} (FP16, fp32 I/O, {len(self.kept_fp32)} nodes kept fp32)"
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


def _quantize(fp32: Path, out: Path, batches: list[np.ndarray], method: str, fmt: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    spec = FORMAT_SPECS[fmt]
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
                reduce_range=spec.reduce_range,
                activation_type=QuantType.QUInt8 if spec.activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calib,
                extra_options={"CalibStridedMinMax": 1, **spec.extra_options},
            )


def _choose_format(fmt: str) -> tuple[str, str, str]:
    """(format, reason, how chosen) for ``fmt``, ``"auto"`` meaning this CPU's format."""
    check_int8_format(fmt)
    if fmt == "auto":
        chosen, reason = detect_int8_format()
        return chosen, reason, "auto"
    return fmt, f"chosen by hand: {FORMAT_SPECS[fmt].target}", "by hand"


def _relevant_flags() -> list[str]:
    return sorted(f for f in cpu_flags() if "vnni" in f or f.startswith(("avx2", "avx512_f", "amx_int8", "asimd")))


def _metadata(
    fp32: onnx.ModelProto, method: str, images: int, fmt: str, reason: str, how: str, gate: str
) -> dict[str, str]:
    spec = FORMAT_SPECS[fmt]
    meta = {m.key: m.value for m in fp32.metadata_props}
    meta[META_PREFIX + "precision"] = "int8"
    meta[META_PREFIX + "int8_format"] = fmt
    meta[META_PREFIX + "quantization"] = json.dumps(
        {
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "int8_format": fmt,
            "target": spec.target,
            "chosen": how,
            "reason": reason,
            "quantized_on_cpu_flags": _relevant_flags(),
            "activations": "uint8 (asymmetric, per tensor)" if spec.activations == "uint8" else "int8 (symmetric)",
            "weights": "int8 (symmetric, per channel)" + (", 7-bit (reduce_range)" if spec.reduce_range else ""),
            "judged_with": gate,
            "calib_method": method,
            "calib_images": images,
        }
    )
    return meta


def _gate_error(fmt: str, kernels: ParityReport, fake: ParityReport, gate: str) -> str:
    """The message of a failed gate: bad quantization, or this CPU's integer kernels saturating."""
    failed = fake if gate == "fake-quant" else kernels
    if gate == "fake-quant" or not fake.passed:
        return f"the INT8 ({fmt}) model's embeddings differ too much from fp32 with {gate}: {failed.summary()}"
    suggested, why = detect_int8_format()
    if suggested == fmt:
        suggested, why = "u8s8-rr", "7-bit weights cannot saturate"
    hint = (
        f"quantize with fmt={suggested!r} ({why})"
        if suggested != fmt
        else "no other CPU format avoids it; use fewer or lower-range activations"
    )
    return (
        f"the INT8 ({fmt}) model's embeddings differ too much from fp32 with this CPU's integer kernels "
        f"(min cosine {kernels.min_cosine:.4f}, needs >= {kernels.min_cosine_required}) while float "
        f"fake-quantization of the same model passes (min cosine {fake.min_cosine:.4f}): integer saturation "
        f"in this CPU's INT8 kernels, not the calibration; {hint}"
    )


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calib_batches: Sequence[np.ndarray],
    *,
    method: str = "minmax",
    fmt: str = "auto",
    parity_images: np.ndarray | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> QuantizeResult:
    """Write a statically quantised INT8 (QDQ) copy of an fp32 ONNX model, calibrated on ``calib_batches``.

    ``fmt`` is one of ``INT8_FORMATS`` or ``"auto"``: this CPU's format (``detect_int8_format``). The
    reidcompress metadata is kept (``precision`` becomes ``int8``, ``int8_format`` and ``quantization``
    say which format, why and for what target; the source checkpoint's hash stays, so ``verify``
    compares its embeddings with the fp32 model's). With ``parity_images`` the INT8 embeddings are
    compared with fp32 both with ORT's integer kernels and as fake-quant, and nothing is written unless
    the format's gate has every cosine at least ``min_cosine`` (ExportError).
    """
    src = require_file(fp32_path, "ONNX model")
    check_calib_method(method, "method")
    fmt, reason, how = _choose_format(fmt)
    if not calib_batches:
        raise InputError("INT8 calibration needs at least one batch of images (calib_batches is empty)")
    proto = onnx.load(str(src))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batches = _rebatch(calib_batches, dim0.dim_value if dim0.HasField("dim_value") else None)
    if not batches:
        raise InputError(f"INT8 calibration needs at least one batch of the model's fixed batch size {dim0.dim_value}")
    images = sum(len(b) for b in batches)
    kernels = fake = None
    with atomic_path(out) as tmp:
        _quantize(src, tmp, batches, method, fmt)
        quantized = onnx.load(str(tmp))
        gate = gate_for(fmt, detect_int8_format()[0])
        _save_with_metadata(quantized, _metadata(proto, method, images, fmt, reason, how, gate), tmp)
        if parity_images is not None:
            kernels, fake = _int8_parity(src, tmp, parity_images, min_cosine)
            if not (fake if gate == "fake-quant" else kernels).passed:
                raise ExportError(_gate_error(fmt, kernels, fake, gate))
    return QuantizeResult(Path(out), method, images, count_qdq(quantized), fmt, reason, gate, kernels, fake)


def _save_with_metadata(proto: onnx.ModelProto, meta: dict[str, str], path: Path) -> None:
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _int8_parity(fp32: Path, int8: Path, images: np.ndarray, min_cosine: float) -> tuple[ParityReport, ParityReport]:
    """(integer kernels, fake-quant) parity of the INT8 model to fp32."""
    from reidcompress.runtime.onnx_backend import OnnxEmbedder

    with OnnxEmbedder(fp32) as ref, OnnxEmbedder(int8, fake_quant=False) as kern:
        kernels = check_parity(ref, kern, images, min_cosine)
        with OnnxEmbedder(int8, fake_quant=True) as fq:
            fake = check_parity(ref, fq, images, min_cosine)
    return kernels, fake


def convert_fp16(
    fp32_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    parity_images: np.ndarray | None = None,
    min_cosine: float = FP16_MIN_COSINE,
) -> Fp16Result:
    """Write an FP16 copy of an fp32 ONNX model for a strongly typed TensorRT build.

    Inputs and outputs stay float32; the normalisation, the BNNeck and the embedding head stay fp32
    (``_fp16.fp32_node_names``). The metadata says ``precision`` ``fp16``. With ``parity_images`` the
    model runs in ONNX Runtime on the CPU against fp32, and nothing is written unless every cosine is
    at least ``min_cosine`` (ExportError).
    """
    src = require_file(fp32_path, "ONNX model")
    proto = onnx.load(str(src))
    meta = {m.key: m.value for m in proto.metadata_props}
    converted, kept = to_fp16(proto)
    meta[META_PREFIX + "precision"] = "fp16"
    meta[META_PREFIX + "fp16_kept_fp32"] = json.dumps(kept)
    parity = None
    with atomic_path(out) as tmp:
        _save_with_metadata(converted, meta, tmp)
        if parity_images is not None:
            from reidcompress.export.onnx import ExportError
            from reidcompress.runtime.onnx_backend import OnnxEmbedder

            with OnnxEmbedder(src) as ref, OnnxEmbedder(tmp) as half:
                parity = check_parity(ref, half, images=parity_images, min_cosine=min_cosine)
            if not parity.passed:
                raise ExportError(f"the FP16 model's embeddings differ too much from fp32: {parity.summary()}")
    return Fp16Result(Path(out), tuple(kept), parity)
