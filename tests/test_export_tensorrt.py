"""TensorRT: everything around the engine build that runs without TensorRT, plus `trt` tests for real engines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reidcompress.errors import BackendUnavailableError, CheckpointError, InputError
from reidcompress.export.tensorrt import (
    EngineSpec,
    build_engine,
    check_engine_compatible,
    read_sidecar,
    require_tensorrt,
    sidecar_path,
)
from reidcompress.runtime import load_embedder


def _has_tensorrt() -> bool:
    try:
        require_tensorrt()
        import torch

        return torch.cuda.is_available()
    except BackendUnavailableError:
        return False


SIDECAR = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "input_size": [256, 128]}


def test_engine_spec_validation() -> None:
    assert EngineSpec().precision == "fp16"
    with pytest.raises(InputError, match="precision"):
        EngineSpec(precision="int4")
    with pytest.raises(InputError, match="min-batch <= opt-batch"):
        EngineSpec(min_batch=8, opt_batch=4, max_batch=16)
    with pytest.raises(InputError, match="workspace"):
        EngineSpec(workspace_mib=1)


def test_compatible_engine_passes_and_mismatches_are_refused() -> None:
    check_engine_compatible(SIDECAR, {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(CheckpointError, match="TensorRT 10.3.0.*TensorRT 10.7.0.*rebuild"):
        check_engine_compatible(
            SIDECAR, {"tensorrt_version": "10.7.0", "gpu_name": "Orin", "compute_capability": "8.7"}
        )
    with pytest.raises(CheckpointError, match="compute capability 8.7.*9.0"):
        check_engine_compatible(
            SIDECAR, {"tensorrt_version": "10.3.0", "gpu_name": "H100", "compute_capability": "9.0"}
        )


def test_sidecar_required_and_validated(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(CheckpointError, match="no sidecar"):
        read_sidecar(engine)
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_embedder(engine)
    sidecar_path(engine).write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"tensorrt_version": "10.3"}))
    with pytest.raises(CheckpointError, match="lacks"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps(SIDECAR))
    assert read_sidecar(engine)["gpu_name"] == "Orin"


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT and a GPU are present")
def test_without_tensorrt_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        require_tensorrt()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 32)
    sidecar_path(engine).write_text(json.dumps(SIDECAR))
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        load_embedder(engine)


def test_int8_without_calibration_is_refused_before_building(tmp_path, tiny_model) -> None:
    from reidcompress.export.onnx import export_onnx
    from reidcompress.models.checkpoint import save_model

    onnx_path = export_onnx(save_model(tmp_path / "t.pt", tiny_model), tmp_path / "t.onnx").path
    with pytest.raises(InputError, match="calibration"):
        build_engine(onnx_path, tmp_path / "t.engine", EngineSpec(precision="int8"))
    assert not (tmp_path / "t.engine").exists()


def test_cli_refuses_bad_int8_calibration_data_before_writing(tmp_path, tiny_model) -> None:
    from typer.testing import CliRunner

    from reidcompress.cli import app
    from reidcompress.models.checkpoint import save_model

    ckpt = save_model(tmp_path / "in" / "t.pt", tiny_model)
    out = tmp_path / "out"
    args = ["export", str(ckpt), "-o", str(out / "t.onnx"), "--trt", "--precision", "int8"]
    res = CliRunner().invoke(app, [*args, "--calib-data", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not found" in res.output and "TensorRT" not in res.output, res.output
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_engine_matches_onnx(tmp_path, tiny_model, synth_root, precision: str) -> None:
    from reidcompress.export.calibration import calibration_batches
    from reidcompress.export.onnx import export_onnx
    from reidcompress.export.parity import check_parity
    from reidcompress.models.checkpoint import save_model
    from reidcompress.runtime.onnx_backend import OnnxEmbedder

    onnx_path = export_onnx(save_model(tmp_path / "t.pt", tiny_model), tmp_path / "t.onnx").path
    calib = calibration_batches(synth_root, (64, 32), num_images=32, batch_size=8) if precision == "int8" else None
    sidecar = build_engine(onnx_path, tmp_path / "t.engine", EngineSpec(precision, 1, 4, 8), calib_batches=calib)
    assert sidecar["precision"] == precision and (tmp_path / "t.engine.json").exists()
    images = np.random.default_rng(0).random((12, 3, 64, 32), dtype=np.float32)
    with load_embedder(tmp_path / "t.engine") as engine:
        report = check_parity(
            OnnxEmbedder(onnx_path), engine, images, {"fp32": 0.9999, "fp16": 0.999}.get(precision, 0.98)
        )
    assert report.passed, report.summary()
