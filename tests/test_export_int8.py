"""INT8 for ONNX Runtime: export --int8 (QDQ, calibrated on real images), parity to fp32, verify, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.errors import InputError
from reidcompress.export.calibration import calibration_batches, reference_images
from reidcompress.export.onnx import read_metadata
from reidcompress.export.parity import check_parity
from reidcompress.export.quantize import detect_int8_format, quantize_onnx
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.verify.api import verify

runner = CliRunner()


@pytest.fixture(scope="module")
def int8_export(trained_tiny, tmp_path_factory):
    ckpt, root = trained_tiny
    tmp = tmp_path_factory.mktemp("int8")
    args = ["export", str(ckpt), "-o", str(tmp / "m.onnx"), "--int8", "--calib-data", str(root)]
    res = runner.invoke(app, [*args, "--calib-images", "64", "--opset", "17", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), tmp / "m.onnx", tmp / "m.int8.onnx", root


def test_int8_model_is_quantised_qdq_with_the_metadata(int8_export) -> None:
    out, fp32, int8, _ = int8_export
    proto = onnx.load(str(int8))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Per-channel weights: a weight DequantizeLinear has one scale per output channel.
    inits = {i.name: i for i in proto.graph.initializer}
    scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    # This CPU's format: uint8 activations on x86-64, symmetric int8 on ARM.
    fmt, reason = detect_int8_format()
    zps = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    act = onnx.TensorProto.INT8 if fmt == "s8s8" else onnx.TensorProto.UINT8
    assert zps and all(z.data_type == act for z in zps)
    meta, meta32 = read_metadata(int8), read_metadata(fp32)
    assert meta["precision"] == "int8" and meta["source_sha256"] == meta32["source_sha256"]
    assert meta["int8_format"] == fmt and json.loads(meta["quantization"])["reason"] == reason
    assert json.loads(meta["quantization"])["calib_method"] == "minmax"
    assert out["int8"]["nodes"]["QuantizeLinear"] > 0 and out["int8"]["parity_to_fp32"]["passed"]
    assert out["int8"]["int8_format"] == fmt and out["int8"]["gate"] == "integer kernels"


def test_int8_embeddings_match_fp32_on_real_images(int8_export) -> None:
    _, fp32, int8, root = int8_export
    images = reference_images((64, 32), root, n=32)
    with OnnxEmbedder(fp32) as a, OnnxEmbedder(int8) as b:
        assert b.describe()["precision"] == "int8"
        parity = check_parity(a, b, images, min_cosine=0.98)
    assert parity.passed and parity.min_cosine >= 0.98 and parity.max_abs_diff > 0  # really quantised


def test_verify_reports_the_int8_drop_and_cosine(int8_export) -> None:
    _, fp32, int8, root = int8_export
    result = verify(fp32, [int8], root, latency_batches=(2,), latency_runs=2, use_cache=False, progress=False)
    cand = result.candidates[0]
    assert cand.runtime["precision"] == "int8" and set(cand.drops) == {"rank1", "rank5", "mAP"}
    assert cand.parity is not None and cand.parity["min_cosine"] >= 0.98


@pytest.mark.parametrize("fmt", ["u8s8-rr", "trt"])
def test_formats_that_pass_on_every_x86_cpu(int8_export, tmp_path, fmt) -> None:
    """u8s8-rr's kernels cannot saturate; trt is judged as fake-quant, which no CPU's kernels change."""
    _, fp32, _, root = int8_export
    batches = calibration_batches(root, (64, 32), num_images=64, batch_size=16)
    images = reference_images((64, 32), root, n=64)
    res = quantize_onnx(fp32, tmp_path / "f.onnx", batches, fmt=fmt, parity_images=images)
    assert res.fmt == fmt and res.parity is not None and res.parity.passed and res.parity.max_abs_diff > 0
    assert res.parity_fake_quant is not None and res.parity_fake_quant.min_cosine >= 0.98


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration(int8_export, tmp_path, method) -> None:
    _, fp32, _, root = int8_export
    batches = calibration_batches(root, (64, 32), num_images=32, batch_size=8)
    res = quantize_onnx(fp32, tmp_path / "h.onnx", batches, method=method, parity_images=np.concatenate(batches))
    assert res.method == method and res.images == 32 and res.parity is not None and res.parity.passed


def test_int8_bad_input_exit_2_and_nothing_written(trained_tiny, int8_export, tmp_path) -> None:
    ckpt, root = trained_tiny
    out = tmp_path / "m.onnx"
    empty = tmp_path.parent / f"{tmp_path.name}-empty"
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (empty / sub).mkdir(parents=True, exist_ok=True)
    for extra, message in [
        ([], "--calib-data"),
        (["--calib-data", str(tmp_path / "no-such-dir")], "not found"),
        (["--calib-data", str(empty)], "no Market-1501 images"),
        (["--calib-data", str(root), "--calib-images", "0"], ">= 1"),
        (["--calib-data", str(root), "--calib-method", "kl"], "--calib-method"),
        (["--calib-data", str(root), "--fp16"], "--fp16"),
        (["--calib-data", str(root), "--int8-output", str(out)], "its own"),
    ]:
        res = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--int8", *extra])
        assert res.exit_code == 2 and message in res.output, res.output
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="at least one batch"):
        quantize_onnx(int8_export[1], tmp_path / "x.onnx", [], method="minmax")
    with pytest.raises(InputError, match="method must be one of"):
        quantize_onnx(int8_export[1], tmp_path / "x.onnx", [np.zeros((1, 3, 64, 32), np.float32)], method="kl")
    assert list(tmp_path.iterdir()) == []
