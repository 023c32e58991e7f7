"""The one-command demo at smoke-test size: every stage, the report, and reuse on re-runs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.models.checkpoint import load_model

runner = CliRunner()


def test_quick_demo_end_to_end_and_reuse(tmp_path) -> None:
    work = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--quick", "--workdir", str(work), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    rows = {(r["model"], r["backend"]): r for r in summary["rows"]}
    assert set(rows) == {("baseline", "PyTorch"), ("baseline", "ORT"), ("pruned", "PyTorch"), ("pruned", "ORT")}
    assert abs(summary["flops_ratio"] - 0.5) <= 0.02 * 0.5
    assert rows[("pruned", "PyTorch")]["flops"] < 0.52 * rows[("baseline", "PyTorch")]["flops"]
    assert rows[("pruned", "ORT")]["rank1"] == rows[("pruned", "PyTorch")]["rank1"]  # ONNX parity
    pruned = load_model(work / "pruned.pt")
    assert (
        pruned.pruning["method"] == "hao_li" and pruned.embedding_dim == load_model(work / "baseline.pt").embedding_dim
    )
    for name in ("REPORT.md", "training_curves.png", "rank1_vs_latency.png", "verify/verify.md", "baseline.onnx"):
        assert (work / name).exists(), name
    assert "rank-1" in (work / "REPORT.md").read_text()

    # A re-run reuses every stage; another method re-runs only pruning and what follows.
    res = runner.invoke(app, ["demo", "--quick", "--workdir", str(work), "--method", "fpgm"])
    assert res.exit_code == 0, res.output
    assert "train on source: reused" in res.output and "fine-tune on target: reused" in res.output
    assert "prune: reused" not in res.output
    assert load_model(work / "pruned.pt").pruning["method"] == "fpgm"


def test_demo_bad_options(tmp_path) -> None:
    res = runner.invoke(app, ["demo", "--quick", "--workdir", str(tmp_path / "d"), "--target-flops", "1.5"])
    assert res.exit_code == 2 and "target-flops" in res.output
    res = runner.invoke(app, ["demo", "--quick", "--workdir", str(tmp_path / "d"), "--method", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


def test_demo_exits_1_when_verify_fails(monkeypatch, tmp_path) -> None:
    import reidcompress.cli.demo as demo_cli

    monkeypatch.setattr(demo_cli, "run_demo", lambda cfg, console: {"passed": False, "report": "R.md", "rows": []})
    res = runner.invoke(app, ["demo", "--quick", "--workdir", str(tmp_path / "d"), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["passed"] is False
    assert "verify failed" in res.stderr
