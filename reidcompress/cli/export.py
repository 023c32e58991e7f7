"""``reidcompress export``: ONNX (always), a CPU INT8 model with ``--int8``, a TensorRT engine with ``--trt``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reidcompress.cli._common import console, emit_json, handle_errors

# export_model's parameters that the command spells otherwise.
_FLAG_OF_PARAMETER = {"parity_data": "--data", "checkpoint": "CKPT", "engine_spec": "--min/opt/max-batch"}
_TRT = "TensorRT (--trt)"
_INT8 = "INT8 (--int8 for ONNX Runtime, --trt --precision int8 for TensorRT)"


@handle_errors(aliases=_FLAG_OF_PARAMETER)
def export_cmd(
    ckpt: Annotated[Path, typer.Argument(help="reidcompress checkpoint to export.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write (model.onnx).")],
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset (default: the exporter's, 20; <= 17 for TensorRT 8.x).")
    ] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--static-batch", help="Dynamic batch axis.")] = True,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Store weights and compute in float16 (I/O stays float32).")
    ] = False,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify the graph with onnxsim.")] = True,
    data: Annotated[Path | None, typer.Option(help="Dataset whose query images the parity check uses.")] = None,
    dataset: Annotated[str, typer.Option(help="Layout of --data/--calib-data.")] = "market1501",
    input_format: Annotated[
        str,
        typer.Option(
            "--input",
            help="What the graph takes: unit (RGB in [0, 1], normalised inside the graph) or normalized "
            "(ImageNet-normalised crops, as trackers such as boxmot feed them).",
        ),
    ] = "unit",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write a statically quantised INT8 (QDQ) model for ONNX Runtime (needs --calib-data).",
            rich_help_panel=_INT8,
        ),
    ] = False,
    int8_output: Annotated[
        Path | None, typer.Option(help="INT8 model path (default: OUTPUT with .int8.onnx).", rich_help_panel=_INT8)
    ] = None,
    int8_format: Annotated[
        str,
        typer.Option(
            help="--int8 model for which CPU: auto (this machine's) | u8s8 (x86 with AVX-512 VNNI or AMX) | "
            "u8s8-rr (x86 with AVX2 only, no VNNI: 7-bit weights against saturation) | s8s8 (ARM: Jetson, "
            "Graviton, Apple).",
            rich_help_panel=_INT8,
        ),
    ] = "auto",
    calib_method: Annotated[
        str | None,
        typer.Option(
            help="INT8 calibration: minmax | entropy | percentile (default: minmax for --int8, entropy for "
            "--trt --precision int8).",
            rich_help_panel=_INT8,
        ),
    ] = None,
    trt: Annotated[
        bool,
        typer.Option(
            "--trt", help="Also build a TensorRT engine (needs TensorRT and an NVIDIA GPU).", rich_help_panel=_TRT
        ),
    ] = False,
    engine: Annotated[
        Path | None, typer.Option(help="Engine path (default: OUTPUT with .engine).", rich_help_panel=_TRT)
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32 | fp16 (built from OUTPUT.fp16.onnx) | int8 (from the symmetric Q/DQ OUTPUT.qdq.onnx; "
            "needs --calib-data). Both are written and checked against fp32 before the build.",
            rich_help_panel=_TRT,
        ),
    ] = "fp16",
    calib_data: Annotated[
        Path | None,
        typer.Option(help="INT8 calibration dataset (training split; target domain).", rich_help_panel=_INT8),
    ] = None,
    calib_images: Annotated[int, typer.Option(help="INT8 calibration images.", rich_help_panel=_INT8)] = 512,
    min_batch: Annotated[int, typer.Option(help="Profile minimum batch.", rich_help_panel=_TRT)] = 1,
    opt_batch: Annotated[int, typer.Option(help="Profile batch TensorRT optimises for.", rich_help_panel=_TRT)] = 8,
    max_batch: Annotated[int, typer.Option(help="Profile maximum batch.", rich_help_panel=_TRT)] = 32,
    workspace: Annotated[int, typer.Option(help="Builder workspace in MiB.", rich_help_panel=_TRT)] = 2048,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Export CKPT to ONNX (named `images` -> `embeddings`), check parity with PyTorch, optionally INT8 and TensorRT.

    With --trt, the model the engine is built from (fp32, FP16 or Q/DQ) is written and checked against the
    fp32 model first; without TensorRT or an NVIDIA GPU the command then fails with exit code 2 and no engine.
    A model that does not reproduce its reference fails with exit code 1 and is not written.
    """
    from reidcompress.export.api import export_model
    from reidcompress.export.tensorrt import EngineSpec

    spec = EngineSpec(min_batch, opt_batch, max_batch, workspace) if trt else None
    report = export_model(
        ckpt, output, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16, simplify=simplify, parity_data=data,
        dataset=dataset, input_format=input_format, int8=int8, int8_output=int8_output, int8_format=int8_format,
        calib_method=calib_method, calib_data=calib_data, calib_images=calib_images, trt=trt, precision=precision,
        engine=engine, engine_spec=spec, log=console.print,
    )  # fmt: skip
    if json_out:
        emit_json(report.to_dict())
