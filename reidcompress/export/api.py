"""``export_model``: checkpoint -> ONNX -> (CPU INT8) -> (TensorRT), the pipeline behind ``reidcompress export``.

Errors name parameters in backticks (`calib_data`), which the command turns into its flags.
Every input is checked before anything is written: output paths, the INT8 options, the calibration
data (sampled up front, file names only). Then each artifact is written atomically, and each derived
model is checked against its reference before it is published: the ONNX model against PyTorch, the
CPU INT8 model and the TensorRT-bound FP16 or Q/DQ model against the fp32 ONNX model (cosine gates,
ONNX Runtime on the CPU). Only then is TensorRT asked for an engine, so a machine without a GPU still
writes, and gates, the exact model the engine would be built from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import check_output_path, require_file
from reidcompress.data.datasets import ImageItem
from reidcompress.errors import ExportError, InputError, ReidCompressError
from reidcompress.export.calibration import calibration_items, image_batches, reference_images
from reidcompress.export.onnx import ExportResult, export_onnx
from reidcompress.export.tensorrt import PRECISIONS, EngineResult, EngineSpec, build_engine
from reidcompress.formats.input_format import check_input_format
from reidcompress.formats.onnx_metadata import read_metadata

__all__ = ["ExportReport", "export_model", "trt_onnx_path", "int8_onnx_path"]

Log = Callable[[str], None]
# The TensorRT-bound model beside OUTPUT for each engine precision (fp32 builds from OUTPUT itself).
TRT_SUFFIXES = {"fp16": ".fp16.onnx", "int8": ".qdq.onnx"}
GATE_IMAGES = 64
CPU_CALIB_METHOD = "minmax"
# TensorRT's implicit INT8 calibrator defaulted to entropy (IInt8EntropyCalibrator2); its Q/DQ model keeps it.
TRT_CALIB_METHOD = "entropy"


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` wrote: the ONNX model, and the CPU INT8 model, the TensorRT-bound model
    and the engine when asked for (the gated models carry their parity with the fp32 ONNX model)."""

    onnx: ExportResult
    int8: Any = None
    trt_onnx: Any = None
    engine: EngineResult | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.onnx.to_dict()
        for key in ("int8", "trt_onnx", "engine"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict()
        return out


def _with_suffix(output: Path, suffix: str) -> Path:
    return output.with_name(output.name.removesuffix(".onnx") + suffix)


def int8_onnx_path(output: str | os.PathLike[str]) -> Path:
    return _with_suffix(Path(output), ".int8.onnx")


def trt_onnx_path(output: str | os.PathLike[str], precision: str) -> Path:
    """The model a TensorRT engine of ``precision`` is built from."""
    return _with_suffix(Path(output), TRT_SUFFIXES[precision]) if precision in TRT_SUFFIXES else Path(output)


def _own_onnx_path(path: Path, output: Path, src: Path, what: str) -> Path:
    if path.suffix.lower() != ".onnx" or path.resolve() == output.resolve():
        raise InputError(f"the {what} needs its own .onnx path, got {path}")
    return check_output_path(path, src)


@dataclass(frozen=True)
class _Plan:
    """The checked request: where each artifact goes and the calibration sample."""

    src: Path
    output: Path
    int8_path: Path | None
    trt_path: Path | None
    engine: Path | None
    calib: list[ImageItem] | None


def _plan(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    fp16: bool,
    int8: bool,
    int8_output: str | os.PathLike[str] | None,
    int8_format: str,
    calib_method: str | None,
    trt: bool,
    precision: str,
    engine: str | os.PathLike[str] | None,
    calib_data: str | os.PathLike[str] | None,
    calib_images: int,
    dataset: str,
) -> _Plan:
    from reidcompress.export.quantize import check_calib_method, check_int8_format

    src = require_file(checkpoint, "checkpoint")
    out = Path(output)
    int8_path = trt_path = engine_path = None
    if int8:
        if fp16:
            raise InputError("INT8 quantises the fp32 model: export it without `fp16`")
        if int8_format == "trt":
            raise InputError("`int8_format` trt is TensorRT's Q/DQ model: ask for `trt` with `precision` int8")
        check_int8_format(int8_format, "`int8_format`", exclude=("trt",))
        int8_path = _own_onnx_path(Path(int8_output) if int8_output else int8_onnx_path(out), out, src, "INT8 model")
    if trt:
        if precision not in PRECISIONS:
            raise InputError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if fp16:
            raise InputError(
                "a TensorRT engine is built from the fp32 export: drop `fp16` and ask for `precision` fp16"
            )
        if precision in TRT_SUFFIXES:
            trt_path = _own_onnx_path(trt_onnx_path(out, precision), out, src, f"TensorRT {precision} model")
            if int8_path is not None and trt_path.resolve() == int8_path.resolve():
                raise InputError(f"the CPU INT8 model and the TensorRT {precision} model both want {trt_path}")
        engine_path = check_output_path(Path(engine) if engine else out.with_suffix(".engine"), src)
        if engine_path.suffix.lower() not in (".engine", ".plan"):
            raise InputError(f"the engine path must end in .engine or .plan, got {engine_path.name}")
    calib = None
    if int8 or (trt and precision == "int8"):
        if calib_method is not None:
            check_calib_method(calib_method, "`calib_method`")
        if calib_data is None:
            raise InputError("INT8 needs calibration images: give `calib_data` (target-domain training images)")
        # File names only: cheap, and it refuses bad calibration data before anything is written.
        calib = calibration_items(calib_data, dataset=dataset, num_images=calib_images)
    return _Plan(src, out, int8_path, trt_path, engine_path, calib)


def _gate_images(size: tuple[int, int], parity_data: Any, calib_data: Any, dataset: str) -> np.ndarray:
    return reference_images(size, parity_data or calib_data, dataset, n=GATE_IMAGES)


def _not_written(e: ExportError, written: list[Path], missing: Path) -> ExportError:
    return ExportError(f"{e} ({', '.join(map(str, written))} written; {missing} was not)")


def export_model(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    simplify: bool = True,
    parity_data: str | os.PathLike[str] | None = None,
    dataset: str = "market1501",
    input_format: str = "unit",
    int8: bool = False,
    int8_output: str | os.PathLike[str] | None = None,
    int8_format: str = "auto",
    calib_method: str | None = None,
    calib_data: str | os.PathLike[str] | None = None,
    calib_images: int = 512,
    trt: bool = False,
    precision: str = "fp16",
    engine: str | os.PathLike[str] | None = None,
    engine_spec: EngineSpec | None = None,
    log: Log | None = None,
) -> ExportReport:
    """Export ``checkpoint`` to ONNX at ``output``, then optionally a CPU INT8 model and a TensorRT engine.

    Args:
        checkpoint: reidcompress checkpoint.
        output: the fp32 (or, with ``fp16``, float16) ONNX model to write.
        opset, dynamic_batch, fp16, simplify: as :func:`export_onnx`.
        parity_data, dataset: dataset whose query images the parity checks use (default: rendered people).
        input_format: what the graph takes, ``unit`` or ``normalized`` (``formats.input_format``).
        int8: also write an INT8 Q/DQ model for ONNX Runtime on the CPU at ``int8_output``
            (default ``OUTPUT.int8.onnx``) in ``int8_format`` (see ``quantize.INT8_FORMATS``).
        calib_method, calib_data, calib_images: INT8 calibration (target-domain training images). The
            default method is per target: ``minmax`` for the CPU model, ``entropy`` for TensorRT's Q/DQ
            model (TensorRT's own calibrator's choice; on the demo's model it kept fp32's rank-1 where
            minmax lost 1.02 points).
        trt: also build a TensorRT engine at ``engine`` (default ``OUTPUT.engine``) of ``precision``:
            fp32 from OUTPUT, fp16 from an FP16 model (``OUTPUT.fp16.onnx``), int8 from a symmetric
            Q/DQ model (``OUTPUT.qdq.onnx``). Those models are written and gated before the build.
        engine_spec: the engine's batch profile and workspace.
        log: called with one line per artifact written.

    Raises:
        ExportError: a model does not reproduce its reference (the failing model is not written).
        BackendUnavailableError: no TensorRT or no GPU; the ONNX models were written and are named.
        EngineBuildError: TensorRT could not parse or build the model.
    """
    say = log or (lambda _line: None)
    check_input_format(input_format)
    plan = _plan(
        checkpoint, output, fp16=fp16, int8=int8, int8_output=int8_output, int8_format=int8_format,
        calib_method=calib_method, trt=trt, precision=precision, engine=engine, calib_data=calib_data,
        calib_images=calib_images, dataset=dataset,
    )  # fmt: skip
    result = export_onnx(
        plan.src, plan.output, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16, simplify=simplify,
        parity_data=parity_data, dataset=dataset, input_format=input_format,
    )  # fmt: skip
    say(f"wrote {plan.output} ({result.exporter} exporter, opset {result.opset}); {result.parity.summary()}")
    written = [plan.output]
    h, w = read_metadata(plan.output)["input_size"]
    size = (int(h), int(w))
    images = _gate_images(size, parity_data, calib_data, dataset) if plan.int8_path or plan.trt_path else None
    batches = list(image_batches(plan.calib, size, batch_size=16)) if plan.calib else []
    int8_result = trt_result = engine_result = None
    if plan.int8_path is not None:
        method = calib_method or CPU_CALIB_METHOD
        int8_result = _quantize(plan.output, plan.int8_path, batches, method, int8_format, images, written)
        say(int8_result.summary())
        written.append(plan.int8_path)
    if plan.trt_path is not None:
        method = calib_method or TRT_CALIB_METHOD
        trt_result = _trt_model(plan.output, plan.trt_path, precision, batches, method, images, written)
        say(trt_result.summary())
        written.append(plan.trt_path)
    if plan.engine is not None:
        try:
            engine_result = _engine(plan.trt_path or plan.output, plan.engine, engine_spec, trt_result, written)
        except ReidCompressError as e:
            e.report = ExportReport(result, int8_result, trt_result)  # written and gated before the build failed
            raise
        say(engine_result.summary())
    return ExportReport(result, int8_result, trt_result, engine_result)


def _quantize(
    fp32: Path, out: Path, batches: list[np.ndarray], method: str, fmt: str, images: Any, written: list[Path]
) -> Any:
    from reidcompress.export.quantize import quantize_onnx

    try:
        return quantize_onnx(fp32, out, batches, method=method, fmt=fmt, parity_images=images)
    except ExportError as e:
        raise _not_written(e, written, out) from None


def _trt_model(
    fp32: Path, out: Path, precision: str, batches: list[np.ndarray], method: str, images: Any, written: list[Path]
) -> Any:
    """The FP16 or symmetric Q/DQ model TensorRT builds from, gated against fp32 in ONNX Runtime."""
    from reidcompress.export.quantize import convert_fp16, quantize_onnx

    try:
        if precision == "fp16":
            return convert_fp16(fp32, out, parity_images=images)
        return quantize_onnx(fp32, out, batches, method=method, fmt="trt", parity_images=images)
    except ExportError as e:
        raise _not_written(e, written, out) from None


def _engine(onnx_path: Path, engine: Path, spec: EngineSpec | None, gated: Any, written: list[Path]) -> EngineResult:
    parity = getattr(gated, "parity", None)
    record = {"parity_to_fp32": parity.to_dict() if parity is not None else None}
    try:
        return build_engine(onnx_path, engine, spec, record=record)
    except ReidCompressError as e:
        names = ", ".join(map(str, written))
        raise type(e)(f"{e}; {names} {'were' if len(written) > 1 else 'was'} written, {engine} was not") from None
