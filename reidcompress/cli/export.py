"""``reidcompress export``: ONNX (always) and, with ``--trt``, a TensorRT engine built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reidcompress.cli._common import console, emit_json, handle_errors
from reidcompress.errors import BackendUnavailableError, InputError
from reidcompress.export.onnx import ExportError, export_onnx

_TRT = "TensorRT (--trt)"


@handle_errors
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
    trt: Annotated[
        bool,
        typer.Option(
            "--trt", help="Also build a TensorRT engine (needs TensorRT and an NVIDIA GPU).", rich_help_panel=_TRT
        ),
    ] = False,
    engine: Annotated[
        Path | None, typer.Option(help="Engine path (default: OUTPUT with .engine).", rich_help_panel=_TRT)
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | int8.", rich_help_panel=_TRT)] = "fp16",
    calib_data: Annotated[
        Path | None,
        typer.Option(help="INT8 calibration dataset (training split; target domain).", rich_help_panel=_TRT),
    ] = None,
    calib_images: Annotated[int, typer.Option(help="INT8 calibration images.", rich_help_panel=_TRT)] = 512,
    min_batch: Annotated[int, typer.Option(help="Profile minimum batch.", rich_help_panel=_TRT)] = 1,
    opt_batch: Annotated[int, typer.Option(help="Profile batch TensorRT optimises for.", rich_help_panel=_TRT)] = 8,
    max_batch: Annotated[int, typer.Option(help="Profile maximum batch.", rich_help_panel=_TRT)] = 32,
    workspace: Annotated[int, typer.Option(help="Builder workspace in MiB.", rich_help_panel=_TRT)] = 2048,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Export CKPT to ONNX (named `images` -> `embeddings`), check parity with PyTorch, optionally build TensorRT.

    Without TensorRT or an NVIDIA GPU, `--trt` fails with exit code 2 after the ONNX model is written.
    A broken export (embeddings differ from PyTorch) fails with exit code 1 and writes nothing.
    """
    spec = _engine_spec(precision, min_batch, opt_batch, max_batch, workspace) if trt else None
    engine = engine or output.with_suffix(".engine")
    if spec is not None and spec.precision == "int8" and calib_data is None and not Path(f"{engine}.calib").exists():
        raise InputError("--precision int8 needs --calib-data DIR (target-domain training images)")
    try:
        result = export_onnx(
            ckpt,
            output,
            opset=opset,
            dynamic_batch=dynamic_batch,
            fp16=fp16,
            simplify=simplify,
            parity_data=data,
            dataset=dataset,
        )
    except ExportError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    summary: dict[str, Any] = result.to_dict()
    console.print(f"wrote {output} ({result.exporter} exporter, opset {result.opset}); {result.parity.summary()}")
    if spec is not None:
        summary["engine"] = _build(
            output, engine or output.with_suffix(".engine"), spec, calib_data, dataset, calib_images
        )
    if json_out:
        emit_json(summary)


def _engine_spec(precision: str, min_batch: int, opt_batch: int, max_batch: int, workspace: int) -> Any:
    from reidcompress.export.tensorrt import EngineSpec

    return EngineSpec(precision, min_batch, opt_batch, max_batch, workspace)


def _build(onnx_path: Path, engine: Path, spec: Any, calib_data: Path | None, dataset: str, n: int) -> dict[str, Any]:
    from reidcompress.export.calibration import calibration_batches
    from reidcompress.export.onnx import read_metadata
    from reidcompress.export.tensorrt import build_engine, require_tensorrt, runtime_info

    try:
        require_tensorrt()
        runtime_info()
    except BackendUnavailableError as e:
        raise BackendUnavailableError(f"{e}; the ONNX model was written to {onnx_path}") from None
    batches = None
    if spec.precision == "int8" and calib_data is not None:
        size = tuple(read_metadata(onnx_path)["input_size"])
        batches = calibration_batches(calib_data, size, dataset=dataset, num_images=n, batch_size=spec.opt_batch)
    sidecar = build_engine(onnx_path, engine, spec, calib_batches=batches)
    console.print(
        f"wrote {engine} (TensorRT {sidecar['tensorrt_version']}, {spec.precision}, "
        f"batch {spec.min_batch}-{spec.max_batch}, {sidecar['gpu_name']})"
    )
    return {"path": str(engine), **sidecar}
