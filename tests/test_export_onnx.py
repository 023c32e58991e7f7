"""ONNX export: names, dynamic batch, metadata, simplifier fallback, parity, CLI behaviour."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.errors import CheckpointError, InputError
from reidcompress.evaluation.features import evaluate_model
from reidcompress.export import onnx as onnx_export
from reidcompress.export.onnx import ExportError, export_onnx, read_metadata
from reidcompress.models.checkpoint import save_model
from reidcompress.runtime import load_embedder
from reidcompress.runtime.onnx_backend import OnnxEmbedder

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth_root):
    from reidcompress.models.reid import ReIDConfig, ReIDNet

    tmp = tmp_path_factory.mktemp("onnx")
    ckpt = save_model(tmp / "tiny.pt", ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32))).eval())
    result = export_onnx(ckpt, tmp / "tiny.onnx", parity_data=synth_root)
    return ckpt, result


def test_names_dynamic_batch_and_metadata(exported) -> None:
    ckpt, result = exported
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == ["images"] and [o.name for o in proto.graph.output] == ["embeddings"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    meta = read_metadata(result.path)
    assert meta["arch"] == "tiny" and meta["input_size"] == [64, 32] and meta["embedding_dim"] == "128"
    assert meta["mean"] == [0.485, 0.456, 0.406] and "source_sha256" in meta and int(meta["flops"]) > 0
    emb = OnnxEmbedder(result.path)
    for n in (1, 5):
        assert emb.embed(np.random.rand(n, 3, 64, 32).astype(np.float32)).shape == (n, 128)
    assert result.simplified and result.exporter == "dynamo"


def test_parity_and_identical_rank1(exported, synth_root) -> None:
    ckpt, result = exported
    assert result.parity.passed and result.parity.min_cosine >= 0.9999 and result.parity.images >= 8
    on_pt = evaluate_model(ckpt, synth_root, use_cache=False, progress=False)
    on_onnx = evaluate_model(result.path, synth_root, use_cache=False, progress=False)
    assert on_onnx["rank1"] == on_pt["rank1"]
    assert on_onnx["mAP"] == pytest.approx(on_pt["mAP"], abs=1e-6)


def test_static_batch_runs_in_chunks(exported, tmp_path) -> None:
    ckpt, dynamic = exported
    static = export_onnx(ckpt, tmp_path / "static.onnx", dynamic_batch=False)
    dim0 = onnx.load(str(static.path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 1
    x = np.random.rand(3, 3, 64, 32).astype(np.float32)
    assert np.allclose(OnnxEmbedder(static.path).embed(x), OnnxEmbedder(dynamic.path).embed(x), atol=1e-5)


def test_fp16_and_old_opset(exported, tmp_path) -> None:
    ckpt, _ = exported
    half = export_onnx(ckpt, tmp_path / "half.onnx", fp16=True)
    assert half.fp16 and read_metadata(half.path)["precision"] == "fp16" and half.parity.min_cosine >= 0.999
    old = export_onnx(ckpt, tmp_path / "old.onnx", opset=17)
    assert old.exporter == "torchscript" and old.opset == 17 and old.parity.passed


def test_simplifier_failure_falls_back(exported, tmp_path, monkeypatch) -> None:
    import onnxsim

    def broken(model, *a, **k):
        raise RuntimeError("simplifier exploded")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    ckpt, _ = exported
    with pytest.warns(UserWarning, match="onnxsim failed"):
        result = export_onnx(ckpt, tmp_path / "raw.onnx")
    assert not result.simplified and result.parity.passed


def test_broken_export_fails_and_writes_nothing(exported, tmp_path, monkeypatch) -> None:
    def sabotage(model):
        init = model.graph.initializer[len(model.graph.initializer) // 2]
        arr = onnx.numpy_helper.to_array(init) * 0 + 1
        init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
        return model, True

    monkeypatch.setattr(onnx_export, "_simplify", sabotage)
    ckpt, _ = exported
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_onnx(ckpt, tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())
    res = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 1 and "does not match" in res.output and not (tmp_path / "bad.onnx").exists()


def test_cli_json_and_trt_unavailable(exported, tmp_path) -> None:
    ckpt, _ = exported
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["parity"]["passed"] and summary["dynamic_batch"]
    trt_out = tmp_path / "t.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "-o", str(trt_out), "--trt"])
    assert res.exit_code == 2 and "TensorRT" in res.output and trt_out.exists()
    assert res.output.strip().splitlines()[-1].startswith("error:")


def test_bad_inputs(exported, tmp_path) -> None:
    ckpt, _ = exported
    with pytest.raises(InputError, match=r"\.onnx"):
        export_onnx(ckpt, tmp_path / "m.txt")
    res = runner.invoke(app, ["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--trt", "--precision", "int8"])
    assert res.exit_code == 2 and "--calib-data" in res.output and not (tmp_path / "m.onnx").exists()


def test_corrupt_onnx_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 10)
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        load_embedder(bad)
    res = runner.invoke(app, ["evaluate", str(bad), "--data", str(tmp_path)])
    assert res.exit_code == 2
