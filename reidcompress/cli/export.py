"""``reidcompress export``: ONNX (always) and, with ``--trt``, a TensorRT engine built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reidcompress.cli._common import console, emit_json, handle_errors
from reidcompress.errors import BackendUnavailableError, InputError
from reidcompress.export._input import check_input_format
from reidcompress.export.onnx import ExportError, export_onnx

_TRT = "TensorRT (--trt)"
_INT8 = "INT8 (--int8 for ONNX Runtime, --trt --precision int8 for TensorRT)"


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
    calib_method: Annotated[
        str, typer.Option(help="--int8 calibration: minmax | entropy | percentile.", rich_help_panel=_INT8)
    ] = "minmax",
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
        typer.Option(help="INT8 calibration dataset (training split; target domain).", rich_help_panel=_INT8),
    ] = None,
    calib_images: Annotated[int, typer.Option(help="INT8 calibration images.", rich_help_panel=_INT8)] = 512,
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
    check_input_format(input_format)
    spec = _engine_spec(precision, min_batch, opt_batch, max_batch, workspace) if trt else None
    engine = engine or output.with_suffix(".engine")
    if spec is not None and spec.precision == "int8" and calib_data is None and not Path(f"{engine}.calib").exists():
        raise InputError("--precision int8 needs --calib-data DIR (target-domain training images)")
    int8_path = _check_int8(ckpt, output, int8_output, calib_data, calib_method, fp16) if int8 else None
    calib_items = None
    if calib_data is not None and (int8 or (spec is not None and spec.precision == "int8")):
        from reidcompress.export.calibration import calibration_items

        # Sampled (and so checked) before anything is written; both INT8 paths calibrate on these images.
        calib_items = calibration_items(calib_data, dataset=dataset, num_images=calib_images)
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
            input_format=input_format,
        )
    except ExportError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    summary: dict[str, Any] = result.to_dict()
    console.print(f"wrote {output} ({result.exporter} exporter, opset {result.opset}); {result.parity.summary()}")
    if int8_path is not None:
        assert calib_data is not None and calib_items is not None
        try:
            summary["int8"] = _int8(output, int8_path, calib_items, calib_data, dataset, calib_method, data)
        except ExportError as e:
            typer.echo(f"error: {e} ({output} was written; {int8_path} was not)", err=True)
            raise typer.Exit(1) from None
    if spec is not None:
        summary["engine"] = _build(output, engine or output.with_suffix(".engine"), spec, calib_items)
    if json_out:
        emit_json(summary)


def _check_int8(
    ckpt: Path, output: Path, int8_output: Path | None, calib_data: Path | None, method: str, fp16: bool
) -> Path:
    """Everything --int8 needs, checked before anything is written."""
    from reidcompress._io import check_output_path
    from reidcompress.export.quantize import check_calib_method

    if calib_data is None:
        raise InputError("--int8 needs --calib-data DIR (target-domain training images to calibrate on)")
    if fp16:
        raise InputError("--int8 quantises the fp32 model: drop --fp16")
    check_calib_method(method)
    path = int8_output or output.with_name(output.name.removesuffix(".onnx") + ".int8.onnx")
    if path.suffix.lower() != ".onnx" or path.resolve() == output.resolve():
        raise InputError(f"the INT8 model needs its own .onnx path, got {path}")
    return check_output_path(path, ckpt)


def _int8(
    fp32: Path, out: Path, items: list[Any], calib_data: Path, dataset: str, method: str, parity_data: Path | None
) -> dict[str, Any]:
    from reidcompress.export.calibration import image_batches, reference_images
    from reidcompress.export.onnx import read_metadata
    from reidcompress.export.quantize import quantize_onnx

    size = tuple(read_metadata(fp32)["input_size"])
    with console.status(f"calibrating INT8 ({method}) on {len(items)} images..."):
        batches = list(image_batches(items, size, batch_size=16))
        images = reference_images(size, parity_data or calib_data, dataset, n=64)
        res = quantize_onnx(fp32, out, batches, method=method, parity_images=images)
    console.print(res.summary())
    return res.to_dict()


def _engine_spec(precision: str, min_batch: int, opt_batch: int, max_batch: int, workspace: int) -> Any:
    from reidcompress.export.tensorrt import EngineSpec

    return EngineSpec(precision, min_batch, opt_batch, max_batch, workspace)


def _build(onnx_path: Path, engine: Path, spec: Any, calib_items: list[Any] | None) -> dict[str, Any]:
    from reidcompress.export.calibration import image_batches
    from reidcompress.export.onnx import read_metadata
    from reidcompress.export.tensorrt import build_engine, require_tensorrt, runtime_info

    try:
        require_tensorrt()
        runtime_info()
    except BackendUnavailableError as e:
        raise BackendUnavailableError(f"{e}; the ONNX model was written to {onnx_path}") from None
    batches = None
    if spec.precision == "int8" and calib_items is not None:
        size = tuple(read_metadata(onnx_path)["input_size"])
        batches = list(image_batches(calib_items, size, batch_size=spec.opt_batch))
    sidecar = build_engine(onnx_path, engine, spec, calib_batches=batches)
    console.print(
        f"wrote {engine} (TensorRT {sidecar['tensorrt_version']}, {spec.precision}, "
        f"batch {spec.min_batch}-{spec.max_batch}, {sidecar['gpu_name']})"
    )
    return {"path": str(engine), **sidecar}
