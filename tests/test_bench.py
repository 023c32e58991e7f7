from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.export.onnx import export_onnx
from reidcompress.models.checkpoint import save_model

runner = CliRunner()


def test_bench_json_and_plot(tiny_model, tmp_path) -> None:
    pt = save_model(tmp_path / "t.pt", tiny_model)
    onnx_path = export_onnx(pt, tmp_path / "t.onnx").path
    report = tmp_path / "verify.json"
    report.write_text(
        json.dumps(
            {
                "reference": {
                    "path": "t.pt",
                    "role": "reference",
                    "runtime": {"backend": "torch"},
                    "flops": 1,
                    "params": 1,
                    "metrics": {"rank1": 80.0, "mAP": 60.0},
                    "drops": {},
                    "parity": None,
                    "latency": {"1": {"p50_ms": 2.0, "images_per_s": 500}},
                    "passed": True,
                },
                "candidates": [],
            }
        )
    )
    res = runner.invoke(
        app,
        [
            "bench",
            str(pt),
            str(onnx_path),
            "--batch-sizes",
            "1,4",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--json",
            "--plot",
            str(tmp_path / "lat.png"),
            "--reports",
            str(report),
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = out["results"]
    assert [(r["backend"], r["batch"]) for r in rows] == [
        ("torch", 1),
        ("torch", 4),
        ("onnxruntime", 1),
        ("onnxruntime", 4),
    ]
    assert all(r["p50_ms"] > 0 and r["flops"] > 0 for r in rows) and "cpu" in out["environment"]
    assert (tmp_path / "lat.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_bad_input(tmp_path) -> None:
    res = runner.invoke(app, ["bench", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 2 and "not found" in res.output
    (tmp_path / "m.pt").write_bytes(b"x")
    res = runner.invoke(app, ["bench", str(tmp_path / "m.pt"), "--batch-sizes", "0"])
    assert res.exit_code == 2


def test_bench_fp16_needs_cuda(tiny_model, tmp_path) -> None:
    pt = save_model(tmp_path / "t.pt", tiny_model)
    res = runner.invoke(app, ["bench", str(pt), "--fp16", "--batch-sizes", "1", "--runs", "3"])
    assert res.exit_code == 2 and "fp16 PyTorch inference needs a CUDA device" in res.output


@pytest.mark.gpu
def test_bench_fp16_times_each_checkpoint_in_both_precisions(tiny_model, tmp_path) -> None:
    from reidcompress.verify.bench import bench

    pt = save_model(tmp_path / "t.pt", tiny_model)
    rows = bench([pt], [1, 4], device="cuda", runs=3, warmup=1, fp16=True)["results"]
    got = [(r["backend"], r["precision"], r["batch"]) for r in rows]
    assert got == [("torch", "fp32", 1), ("torch", "fp32", 4), ("torch", "fp16", 1), ("torch", "fp16", 4)]
    assert {r["model"] for r in rows} == {str(pt)} and all(r["p50_ms"] > 0 for r in rows)


def test_timed_onnx_sessions_do_not_spin(tiny_model, tmp_path) -> None:
    from reidcompress.runtime import load_embedder
    from reidcompress.verify.latency import MEASURE_SPINNING

    onnx_path = export_onnx(save_model(tmp_path / "t.pt", tiny_model), tmp_path / "t.onnx").path
    key = "session.intra_op.allow_spinning"
    with load_embedder(onnx_path, threads=1, spinning=MEASURE_SPINNING) as emb:
        assert emb.session.get_session_options().get_session_config_entry(key) == "0"
        assert emb.embed(np.zeros((2, 3, 64, 32), np.float32)).shape == (2, 128)
