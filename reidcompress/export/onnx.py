"""ONNX export: named I/O, dynamic batch, onnxsim, metadata, and a parity check against PyTorch."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from reidcompress import __version__
from reidcompress._io import atomic_path, check_output_path, file_sha256, require_file
from reidcompress.errors import ExportError, InputError
from reidcompress.export._fp16 import to_fp16
from reidcompress.export.calibration import reference_images
from reidcompress.export.parity import ParityReport, check_parity
from reidcompress.formats.input_format import INPUT_FORMAT_KEY, check_input_format, input_description
from reidcompress.formats.onnx_metadata import (
    INPUT,
    META_PREFIX,
    OUTPUT,
    decode_metadata,
    encode_metadata,
    read_metadata,
)
from reidcompress.models.checkpoint import load_model
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops, count_params
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.runtime.torch_backend import TorchEmbedder

__all__ = [
    "ExportResult",
    "ExportError",
    "export_onnx",
    "write_onnx",
    "read_metadata",
    "decode_metadata",
    "model_metadata",
    "INPUT",
    "OUTPUT",
    "META_PREFIX",
]

log = logging.getLogger(__name__)

DYNAMO_MIN_OPSET = 18  # torch's dynamo exporter cannot target older opsets (TensorRT 8.5 on JetPack 5 parses <= 17)


@dataclass
class ExportResult:
    path: Path
    exporter: str
    opset: int
    simplified: bool
    dynamic_batch: bool
    fp16: bool
    parity: ParityReport
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": str(self.path),
            "exporter": self.exporter,
            "opset": self.opset,
            "simplified": self.simplified,
            "dynamic_batch": self.dynamic_batch,
            "fp16": self.fp16,
            "parity": self.parity.to_dict(),
        }


def _torch_export(model: ReIDNet, path: Path, opset: int | None, dynamic: bool) -> str:
    h, w = model.config.input_size
    dummy = torch.rand(2 if dynamic else 1, 3, h, w)
    if opset is None or opset >= DYNAMO_MIN_OPSET:
        try:
            # torch's exporter prints progress on stdout, which `--json` reserves for the result.
            shapes = {INPUT: {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (dummy,),
                    str(path),
                    dynamo=True,
                    dynamic_shapes=shapes,
                    external_data=False,
                    opset_version=opset,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                )
            return "dynamo"
        except Exception as e:  # noqa: BLE001 - any exporter failure falls back to the TorchScript exporter
            log.warning("dynamo ONNX export failed (%s); falling back to the TorchScript exporter", e)
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            dynamic_axes=axes,
            opset_version=opset or 17,
            input_names=[INPUT],
            output_names=[OUTPUT],
        )
    return "torchscript"


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim's own check failed")
        return simplified, True
    except Exception as e:  # noqa: BLE001 - the unsimplified graph is still a correct model
        log.warning("onnxsim could not simplify the graph (%s); keeping the unsimplified model", e)
        warnings.warn(f"onnxsim failed ({e}); the unsimplified ONNX model is written", stacklevel=2)
        return model, False


def model_metadata(model: ReIDNet, source: Path, precision: str, input_format: str = "unit") -> dict[str, str]:
    cfg = model.config
    return encode_metadata(
        {
            "arch": cfg.arch,
            "input_size": list(cfg.input_size),
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "input": input_description(input_format),
            INPUT_FORMAT_KEY: input_format,
            "embedding_dim": str(model.embedding_dim),
            "flops": str(count_flops(model, cfg.input_size)),
            "params": str(count_params(model)),
            "pruning": model.pruning,
            "config": cfg.to_dict(),
            "source_sha256": file_sha256(source),
            "source": source.name,
            "precision": precision,
            "version": __version__,
        }
    )


def _finish(path: Path, metadata: dict[str, str], simplify: bool, fp16: bool) -> bool:
    proto = onnx.load(str(path))
    simplified = False
    if simplify:
        proto, simplified = _simplify(proto)
    if fp16:
        proto, _ = to_fp16(proto)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return simplified


def _graph_model(model: ReIDNet, input_format: str) -> ReIDNet:
    """The module to trace: ``model``, or for ``normalized`` input a copy whose in-graph normalisation
    is the identity (mean 0, std 1: exact in floating point, and onnxsim removes the two no-op nodes)."""
    if check_input_format(input_format) == "unit":
        return model
    bare = copy.deepcopy(model)
    bare.get_buffer("pixel_mean").zero_()
    bare.get_buffer("pixel_std").fill_(1.0)
    return bare


def write_onnx(
    model: ReIDNet,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    simplify: bool = True,
    metadata: dict[str, str] | None = None,
    input_format: str = "unit",
) -> tuple[str, bool]:
    """Write ``model`` (put in eval mode) as ONNX at ``path`` as ``export`` does, without the parity check.

    ``input_format``: ``unit`` ([0, 1] images, normalised in the graph) or ``normalized`` (the graph
    takes ImageNet-normalised images; ``formats.input_format``). Returns the exporter used and whether onnxsim
    simplified the graph.
    """
    path = Path(path)
    model.eval()
    exporter = _torch_export(_graph_model(model, input_format), path, opset, dynamic_batch)
    return exporter, _finish(path, metadata or {}, simplify, fp16)


def export_onnx(
    ckpt: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    simplify: bool = True,
    parity_data: str | os.PathLike[str] | None = None,
    dataset: str = "market1501",
    min_cosine: float | None = None,
    input_format: str = "unit",
) -> ExportResult:
    """Export a checkpoint to ONNX, check it against PyTorch on real images, then publish it.

    Nothing is written at ``output`` unless the exported model reproduces the PyTorch embeddings
    (cosine >= 0.9999 for fp32, 0.999 for fp16, unless ``min_cosine`` says otherwise).
    ``input_format``: what the graph takes, ``unit`` or ``normalized`` (see ``write_onnx``).
    """
    src = require_file(ckpt, "checkpoint")
    out = check_output_path(output, src)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the ONNX output must end in .onnx, got {out.name}")
    if opset is not None and not 13 <= opset <= 23:
        raise InputError(f"--opset must be between 13 and 23, got {opset}")
    check_input_format(input_format)
    model = load_model(src)
    images = reference_images(model.config.input_size, parity_data, dataset)
    required = min_cosine if min_cosine is not None else (0.999 if fp16 else 0.9999)
    with atomic_path(out) as tmp:
        meta = model_metadata(model, src, "fp16" if fp16 else "fp32", input_format)
        exporter, simplified = write_onnx(
            model,
            tmp,
            opset=opset,
            dynamic_batch=dynamic_batch,
            fp16=fp16,
            simplify=simplify,
            metadata=meta,
            input_format=input_format,
        )
        with OnnxEmbedder(tmp) as onnx_model:
            _check_batches(onnx_model, images, dynamic_batch)
            parity = check_parity(TorchEmbedder(model), onnx_model, images, required)
        if not parity.passed:
            raise ExportError(f"ONNX export does not match PyTorch: {parity.summary()}")
        used_opset = next((o.version for o in onnx.load(str(tmp)).opset_import if o.domain in ("", "ai.onnx")), 0)
    return ExportResult(out, exporter, used_opset, simplified, dynamic_batch, fp16, parity, meta)


def _check_batches(embedder: Any, images: np.ndarray, dynamic: bool) -> None:
    """The exported graph must run at batch 1, and at batch N when the batch is dynamic."""
    sizes = (1, min(4, len(images))) if dynamic else (1,)
    for n in sizes:
        out = embedder.embed(images[:n])
        if out.shape[0] != n or not np.isfinite(out).all():
            raise ExportError(f"the exported model gives a wrong output at batch {n}: shape {out.shape}")
