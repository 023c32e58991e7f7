"""verify: tolerances decide the exit code; parity for the same network; reports; latency on a fake clock."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.data.datasets import load_dataset
from reidcompress.errors import InputError
from reidcompress.export.onnx import export_onnx
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.verify.api import Tolerances, verify
from reidcompress.verify.latency import LatencyStats, measure, measure_interleaved

runner = CliRunner()


@pytest.fixture(scope="module")
def models(separable_root, colour_reader, tmp_path_factory):
    # Good and broken by construction, not by how a training run turns out on this CPU: the reference reads
    # each image's colour and the identities are flat colours far apart (rank-1 100, conftest.colour_reader);
    # the good candidate is its ONNX export; the broken one has its BNNeck weight zeroed, so every image gets
    # the same (zero) embedding and its ranking is the gallery order whatever the image.
    tmp = tmp_path_factory.mktemp("verify")
    ckpt = colour_reader
    onnx_path = export_onnx(ckpt, tmp / "reference.onnx").path
    bad = load_model(ckpt)
    with torch.no_grad():
        bad.bnneck.weight.zero_()
    bad_path = save_model(tmp / "broken.pt", bad)
    return ckpt, onnx_path, bad_path, separable_root


def _rank1_of_gallery_order(root) -> float:
    """Rank-1 of a model that ranks every gallery in file order (all distances tie, ``ties="stable"``):
    a query hits when its first gallery image from another camera or identity has its identity."""
    ds = load_dataset(root)
    hits = [
        next(g for g in ds.gallery if (g.pid, g.camid) != (q.pid, q.camid)).pid == q.pid
        for q in ds.query
        if any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    ]
    return 100.0 * sum(hits) / len(hits)


def test_good_candidate_passes_with_parity(models, tmp_path) -> None:
    ckpt, onnx_path, _, root = models
    result = verify(ckpt, [onnx_path], root, latency_batches=(1, 4), latency_runs=3, use_cache=False, progress=False)
    assert result.passed
    cand = result.candidates[0]
    assert cand.drops["rank1"] == pytest.approx(0, abs=1e-9) and cand.parity["min_cosine"] > 0.9999
    assert set(cand.latency) == {"1", "4"} and cand.latency["4"]["images_per_s"] > 0
    assert cand.runtime["backend"] == "onnxruntime" and result.reference.metrics["rank1"] == 100.0


def test_broken_candidate_fails_cli_exit_1_with_report(models, tmp_path) -> None:
    ckpt, onnx_path, bad_path, root = models
    args = [
        "verify",
        "--reference",
        str(ckpt),
        "--candidate",
        str(onnx_path),
        "--candidate",
        str(bad_path),
        "--data",
        str(root),
        "--latency-batches",
        "1",
        "--latency-runs",
        "2",
        "--no-cache",
        "--report",
        str(tmp_path / "rep"),
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    good, broken = out["candidates"]
    assert good["passed"] and not broken["passed"] and not out["passed"]
    # 8 identities in file order: only the first identity's queries hit, rank-1 12.5, a drop of 87.5 points.
    assert broken["metrics"]["rank1"] == pytest.approx(_rank1_of_gallery_order(root)) == 12.5
    assert broken["drops"]["rank1"] == pytest.approx(87.5) and broken["parity"] is None  # another network
    md = (tmp_path / "rep" / "verify.md").read_text()
    assert "FAILED" in md and "rank-1 drop" in md and json.loads((tmp_path / "rep" / "verify.json").read_text())


def test_good_candidate_cli_exit_0_and_bad_input_exit_2(models, tmp_path) -> None:
    ckpt, onnx_path, _, root = models
    ok = runner.invoke(
        app,
        [
            "verify",
            "--reference",
            str(ckpt),
            "--candidate",
            str(onnx_path),
            "--data",
            str(root),
            "--latency-batches",
            "1",
            "--latency-runs",
            "2",
            "--min-cosine",
            "0.9999",
        ],
    )
    assert ok.exit_code == 0, ok.output
    res = runner.invoke(
        app, ["verify", "--reference", str(ckpt), "--candidate", str(tmp_path / "x.onnx"), "--data", str(root)]
    )
    assert res.exit_code == 2 and "not found" in res.output
    with pytest.raises(InputError):
        Tolerances(max_rank1_drop=-1)


def test_measure_on_a_fake_clock() -> None:
    ticks = iter(range(0, 10_000))
    calls = []
    stats = measure(lambda: calls.append(1), batch=4, warmup=2, runs=5, clock=lambda: next(ticks) * 0.001)
    assert len(calls) == 7 and stats.runs == 5
    # Each timed run spans exactly one tick of the fake clock between its two reads.
    assert stats.p50_ms == pytest.approx(1.0) and stats.std_ms == pytest.approx(0.0)
    assert stats.images_per_s == pytest.approx(4000.0)
    s = LatencyStats.from_times(2, [0.001, 0.002, 0.003, 0.004, 0.100])
    assert s.p50_ms == pytest.approx(3.0) and s.p99_ms > s.p95_ms > s.p50_ms and s.min_ms == pytest.approx(1.0)


def test_measure_stops_at_the_time_budget() -> None:
    t = iter(range(0, 10_000))
    stats = measure(lambda: None, batch=1, warmup=0, runs=100, max_seconds=5, clock=lambda: float(next(t)))
    assert 3 <= stats.runs < 100


def test_interleaved_timing_runs_models_in_turn() -> None:
    now = [0.0]
    order: list[str] = []

    def work(name: str, cost: float):
        def fn() -> None:
            order.append(name)
            now[0] += cost

        return fn

    stats = measure_interleaved(
        {"a": work("a", 0.002), "b": work("b", 0.005)}, batch=2, warmup=1, runs=3, clock=lambda: now[0]
    )
    # Warm-up then timed rounds alternate a, b: load from elsewhere hits both models alike.
    assert order == ["a", "b"] * 4
    assert stats["a"].runs == stats["b"].runs == 3
    assert stats["a"].p50_ms == pytest.approx(2.0) and stats["b"].p50_ms == pytest.approx(5.0)
