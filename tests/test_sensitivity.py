"""Sensitivity analysis (shape, resumability, keying), per-layer rates from it, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.errors import InputError, MethodError
from reidcompress.models.checkpoint import load_model
from reidcompress.models.summary import count_flops
from reidcompress.prune.criteria import L1Norm
from reidcompress.prune.engine import ScoredGroup, apply_plan, score_groups, select_channels
from reidcompress.prune.planning import FlopModel, kept_for_costs
from reidcompress.prune.sensitivity import SensitivityProfile, analyse_sensitivity
from reidcompress.prune.sensitivity import analysis as sens

runner = CliRunner()
INTERNAL = ["backbone.layer1.0.conv1", "backbone.layer2.0.conv1", "backbone.layer3.0.conv1", "backbone.layer4.0.conv1"]


@pytest.fixture(scope="module")
def analysis(trained_tiny, tmp_path_factory):
    ckpt, root = trained_tiny
    store = tmp_path_factory.mktemp("sens")
    calls: list[tuple[str, int, int]] = []
    res = analyse_sensitivity(
        ckpt, root, rates=(0.25, 0.5), max_queries=12, store=store, progress=lambda *a: calls.append(a)
    )
    return res, store, calls


def test_one_result_per_group_and_rate(analysis) -> None:
    res, _, calls = analysis
    assert [layer["root"] for layer in res["layers"]] == INTERNAL
    assert res["queries"] == 12 and res["rates"] == [0.25, 0.5] and res["baseline"]["rank1"] > 0
    for layer in res["layers"]:
        lo, hi = layer["points"]
        assert (lo["rate"], hi["rate"]) == (0.25, 0.5)
        assert lo["kept"] == round(layer["channels"] * 0.75) and hi["kept"] == layer["channels"] // 2
        assert 0 < lo["flops_saved"] < hi["flops_saved"] < 1
        assert hi["rank1_drop"] == pytest.approx(res["baseline"]["rank1"] - hi["rank1"])
    assert [c[1:] for c in calls] == [(i, 8) for i in range(1, 9)]


def test_flops_saved_is_that_of_the_real_surgery(analysis, trained_tiny) -> None:
    res, _, _ = analysis
    model = load_model(trained_tiny[0])
    flops0 = count_flops(model, (64, 32))
    groups = score_groups(model, L1Norm(), residual=False)
    layer = res["layers"][3]
    g = next(g for g in groups if g.root == layer["root"])
    apply_plan(model, select_channels([g], {g.root: layer["points"][1]["kept"]}))
    assert layer["points"][1]["flops_saved"] == pytest.approx(1 - count_flops(model, (64, 32)) / flops0)


def test_a_rerun_reuses_every_result_and_measures_only_what_is_missing(analysis, trained_tiny, monkeypatch) -> None:
    res, store, _ = analysis
    ckpt, root = trained_tiny
    evaluated: list[int] = []
    real = sens._metrics
    monkeypatch.setattr(sens, "_metrics", lambda *a, **kw: evaluated.append(1) or real(*a, **kw))
    again = analyse_sensitivity(ckpt, root, rates=(0.25, 0.5), max_queries=12, store=store)
    assert not evaluated and again["layers"] == res["layers"]
    (Path(res["store"]) / "backbone.layer2.0.conv1@0.5.json").unlink()
    analyse_sensitivity(ckpt, root, rates=(0.25, 0.5), max_queries=12, store=store)
    assert len(evaluated) == 1
    # Another query subset is another key: nothing stale is reused.
    evaluated.clear()
    other = analyse_sensitivity(ckpt, root, rates=(0.5,), max_queries=11, store=store)
    assert other["store"] != res["store"] and len(evaluated) == 1 + 4


def test_data_driven_criterion(trained_tiny, tmp_path) -> None:
    ckpt, root = trained_tiny
    res = analyse_sensitivity(
        ckpt, root, method="entropy", rates=(0.5,), max_queries=8, calib_batches=1, store=tmp_path
    )
    assert [layer["root"] for layer in res["layers"]] == INTERNAL and res["calib_batches"] == 1


def test_bad_input(trained_tiny, tmp_path) -> None:
    ckpt, root = trained_tiny
    with pytest.raises(InputError, match="rates"):
        analyse_sensitivity(ckpt, root, rates=(0.5, 1.0), store=tmp_path)
    with pytest.raises(MethodError, match="prunes once"):
        analyse_sensitivity(ckpt, root, method="psfp", store=tmp_path)
    res = runner.invoke(app, ["sensitivity", str(ckpt), "--data", str(tmp_path / "none"), "--report", str(tmp_path)])
    assert res.exit_code == 2 and "error:" in res.output


def _profile(tmp_path: Path, drops: dict[str, list[float]], sizes: dict[str, int]) -> SensitivityProfile:
    layers = [
        {
            "root": root,
            "channels": sizes[root],
            "points": [{"rate": r, "rank1_drop": d, "mAP_drop": d} for r, d in zip((0.25, 0.5, 0.75), ds, strict=True)],
        }
        for root, ds in drops.items()
    ]
    doc = {"format": sens.FORMAT, "method": "hao_li", "checkpoint_sha256": "x", "residual": False, "layers": layers}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    return SensitivityProfile.load(path)


def test_profile_costs_are_monotone_from_zero(tmp_path) -> None:
    p = _profile(tmp_path, {"a": [-2.0, 3.0, 1.0]}, {"a": 8})
    assert p.cost("a", 0.0) == 0.0 and p.cost("a", 0.25) == 0.0  # a gain is noise, not a negative cost
    assert p.cost("a", 0.375) == pytest.approx(1.5) and p.cost("a", 0.75) == pytest.approx(3.0)
    with pytest.raises(InputError, match="not a sensitivity"):
        (tmp_path / "bad.json").write_text("{}")
        SensitivityProfile.load(tmp_path / "bad.json")


@pytest.mark.parametrize("round_to", [1, 4])
def test_per_layer_rates_meet_the_flops_target_and_spare_the_sensitive_layer(tiny_model, tmp_path, round_to) -> None:
    groups = score_groups(tiny_model, L1Norm(), residual=False)
    sizes = {g.root: g.size for g in groups}
    drops = {root: [0.1, 0.2, 0.4] for root in INTERNAL}
    drops[INTERNAL[3]] = [20.0, 40.0, 60.0]  # the widest group is the most sensitive
    profile = _profile(tmp_path, drops, sizes)
    flop_model = FlopModel.of(tiny_model, (64, 32))
    target = 0.75 * flop_model.total
    kept = kept_for_costs(
        groups, flop_model, target, profile.cost, min_kept=profile.min_kept(groups, round_to), round_to=round_to
    )
    assert all(k % round_to == 0 and k >= sizes[r] // 4 for r, k in kept.items())
    assert kept[INTERNAL[3]] / sizes[INTERNAL[3]] > max(kept[r] / sizes[r] for r in INTERNAL[:3])
    apply_plan(tiny_model, select_channels(groups, kept))
    assert abs(count_flops(tiny_model, (64, 32)) / flop_model.total - 0.75) <= 0.02 * 0.75
    with pytest.raises(MethodError, match="analysed rates"):
        kept_for_costs(groups, flop_model, 0.05 * flop_model.total, profile.cost, min_kept=profile.min_kept(groups, 1))


def test_profile_must_match_the_network(tmp_path) -> None:
    g = ScoredGroup("a", torch.ones(8), ("a",), (), False)
    profile = _profile(tmp_path, {"a": [1.0, 2.0, 3.0]}, {"a": 16})
    with pytest.raises(MethodError, match="other widths"):
        profile.min_kept([g], 1)


def test_cli_report_then_prune_with_the_sensitivity(analysis, trained_tiny, tmp_path) -> None:
    ckpt, root = trained_tiny
    report = tmp_path / "rep"
    args = ["sensitivity", str(ckpt), "--data", str(root), "--rates", "0.5", "--max-queries", "12"]
    res = runner.invoke(app, [*args, "--report", str(report), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [layer["root"] for layer in out["layers"]] == INTERNAL
    assert (report / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((report / "sensitivity.json").read_text())["layers"] == out["layers"]
    table = runner.invoke(app, [*args, "--report", str(report)])
    assert table.exit_code == 0 and "layer4.0.conv1" in table.stdout

    pruned = tmp_path / "p.pt"
    prune = ["prune", str(ckpt), "-m", "hao_li", "--target-flops", "0.7", "--round-to", "1", "-o", str(pruned)]
    res = runner.invoke(app, [*prune, "--sensitivity", str(report / "sensitivity.json"), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["target_met"] and abs(rec["flops_ratio"] - 0.7) <= 0.014
    assert rec["sensitivity"]["method"] == "hao_li" and load_model(pruned).pruning["sensitivity"]
    info = runner.invoke(app, ["info", str(pruned)])
    assert info.exit_code == 0 and "per-layer rates" in info.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "0.5"], "--target-flops or --target-latency"),
        (["--target-flops", "0.7", "--scope", "global"], "--scope global"),
        (["--target-flops", "0.7", "--residual"], "--no-residual"),
        (["--target-flops", "0.7", "--steps", "2"], "drop --steps"),
    ],
)
def test_prune_with_sensitivity_bad_options_exit_2(analysis, trained_tiny, tmp_path, extra, message) -> None:
    res_json = tmp_path / "s.json"
    res_json.write_text(json.dumps(analysis[0]))
    out = tmp_path / "p.pt"
    args = ["prune", str(trained_tiny[0]), "-m", "hao_li", "--sensitivity", str(res_json), "-o", str(out), *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and message in res.output and not out.exists()
