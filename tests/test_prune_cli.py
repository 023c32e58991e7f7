"""``reidcompress prune`` and ``reidcompress methods`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.errors import InputError
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDNet
from reidcompress.prune import get_method, list_methods
from reidcompress.prune.api import prune_with_settings
from reidcompress.prune.options import PruneOptions, resolve_options

runner = CliRunner()


@pytest.fixture
def ckpt(tiny_model: ReIDNet, tmp_path: Path) -> Path:
    return save_model(tmp_path / "tiny.pt", tiny_model)


def test_prune_json(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    res = runner.invoke(app, ["prune", str(ckpt), "--method", "hao_li", "--rate", "0.5", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    for key in ("method", "params_before", "params_after", "flops_before", "flops_after"):
        assert key in info
    assert info["params_after"] < info["params_before"] and info["round_to"] == 8
    assert load_model(out).pruning["method"] == "hao_li"


def test_prune_table_for_people(ckpt: Path, tmp_path: Path) -> None:
    args = ["prune", str(ckpt), "-m", "fpgm", "--target-flops", "0.6", "--round-to", "1", "--residual"]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "p.pt")])
    assert res.exit_code == 0, res.output
    assert "GFLOPs" in res.stdout and load_model(tmp_path / "p.pt").pruning["residual"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope", "--rate", "0.5"], "unknown pruning method"),
        (["--method", "hao_li", "--rate", "1.0"], "--rate"),
        (["--method", "hao_li", "--rate", "-0.1"], "--rate"),
        (["--method", "hao_li", "--target-flops", "0"], "--target-flops"),
        (["--method", "hao_li", "--target-flops", "1.5"], "--target-flops"),
        (["--method", "hao_li", "--rate", "0.5", "--target-flops", "0.5"], "exactly one"),
        (["--method", "hao_li"], "exactly one"),
        (["--method", "molchanov", "--rate", "0.5"], "--data"),
        (["--method", "psfp", "--rate", "0.5"], "--epochs"),
        (["--method", "thinet", "--rate", "0.5"], "--data"),
        (["--method", "channel_pruning", "--target-flops", "0.5"], "--data"),
        (["--method", "afp", "--rate", "0.5"], "--epochs"),
        (["--method", "play_and_prune", "--rate", "0.5", "--epochs", "2"], "--data"),
        (["--method", "afp", "--rate", "0.5", "--epochs", "2", "--holdout", "1.5"], "--holdout"),
        (["--method", "hao_li", "--rate", "0.5", "--scope", "world"], "--scope"),
        (["--rate", "0.5"], "give --method"),
        (["--recipe", "no-such-recipe"], "recipe 'no-such-recipe' not found"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(ckpt: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "p.pt"
    res = runner.invoke(app, ["prune", str(ckpt), *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert list(tmp_path.iterdir()) == [ckpt]


def test_refuses_to_overwrite_its_input(ckpt: Path) -> None:
    res = runner.invoke(app, ["prune", str(ckpt), "-m", "hao_li", "--rate", "0.5", "-o", str(ckpt)])
    assert res.exit_code == 2 and "refusing to overwrite" in res.output


def test_methods_lists_every_method() -> None:
    res = runner.invoke(app, ["methods", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["methods"]
    assert [r["name"] for r in rows] == list_methods()
    names = {"hao_li", "molchanov", "entropy", "fpgm", "auto_balanced", "psfp", "thinet", "channel_pruning"}
    assert names | {"redundant_channels", "play_and_prune", "afp"} <= {r["name"] for r in rows}
    for r in rows:
        assert r["paper"] and r["criterion"] and r["strategy"]
        assert isinstance(r["needs_data"], bool) and isinstance(r["needs_training"], bool)
    table = runner.invoke(app, ["methods"])
    assert table.exit_code == 0
    assert all(r["name"] in table.stdout for r in rows)
    assert "hao_li" in table.stdout and "weights only" in table.stdout and "needs --data and --epochs" in table.stdout


def test_prune_with_calibration_data(ckpt: Path, synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    args = ["prune", str(ckpt), "-m", "molchanov", "--target-flops", "0.6", "--round-to", "1"]
    res = runner.invoke(app, [*args, "--data", str(synth_root), "--calib-batches", "1", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["method"] == "molchanov" and info["target_met"] and out.exists()


def test_bad_data_folder_exit_2(ckpt: Path, tmp_path: Path) -> None:
    args = ["prune", str(ckpt), "-m", "entropy", "--rate", "0.5", "--data", str(tmp_path / "none")]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "p.pt")])
    assert res.exit_code == 2 and not (tmp_path / "p.pt").exists()


def _recipe(tmp_path: Path, prune: dict) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"model": {"arch": "tiny"}, "prune": prune, "finetune": {"epochs": 30, "lr": 1e-4}}))
    return path


def test_recipe_sets_what_the_command_line_does_not(ckpt: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, {"method": "fpgm", "target_flops": 0.6, "round_to": 2, "residual": True})
    res = runner.invoke(app, ["prune", str(ckpt), "--recipe", str(recipe), "-o", str(tmp_path / "a.pt"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert (info["method"], info["target_flops"], info["round_to"], info["residual"]) == ("fpgm", 0.6, 2, True)
    # An amount on the command line replaces the recipe's amount whole; other explicit options win too.
    args = ["--recipe", str(recipe), "--rate", "0.25", "--round-to", "4", "-o", str(tmp_path / "b.pt"), "--json"]
    info = json.loads(runner.invoke(app, ["prune", str(ckpt), *args]).stdout)
    assert (info["method"], info["rate"], info["target_flops"], info["round_to"]) == ("fpgm", 0.25, None, 4)


def test_recipe_with_unknown_prune_fields_is_refused(ckpt: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, {"method": "hao_li", "rate": 0.5, "epochs": 3})
    res = runner.invoke(app, ["prune", str(ckpt), "--recipe", str(recipe), "-o", str(tmp_path / "p.pt")])
    assert res.exit_code == 2 and "unknown: ['epochs']" in res.output and not (tmp_path / "p.pt").exists()


def test_the_models_recipes_prune_a_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["prune", str(ckpt), "--recipe", "resnet50", "--round-to", "4", "-o", str(tmp_path / "p.pt"), "--json"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["method"] == "hao_li" and info["target_met"] and abs(info["flops_ratio"] - 0.5) <= 0.01


def test_resolve_options_merges_a_recipe_under_the_given_settings(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, {"method": "fpgm", "target_flops": 0.6, "round_to": 2, "residual": True})
    method, options, train = resolve_options({"rate": 0.25, "scope": None, "steps": 2}, recipe=recipe)
    assert method == "fpgm" and train == {"lr": 1e-4}
    assert options == PruneOptions(rate=0.25, round_to=2, residual=True, steps=2)
    # A latency target is an amount too: the recipe's FLOPs target gives way to it.
    _, options, _ = resolve_options({}, recipe=recipe, latency=True)
    assert options.target_flops is None and options.rate is None
    with pytest.raises(InputError, match="`method`"):
        resolve_options({"rate": 0.5})


def test_prune_with_settings_is_what_the_command_runs(ckpt: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, {"method": "hao_li", "target_flops": 0.6, "round_to": 2})
    settings = {"method": None, "rate": None, "round_to": 4}
    res = prune_with_settings(ckpt, tmp_path / "lib.pt", settings, recipe=recipe)
    cli = runner.invoke(
        app, ["prune", str(ckpt), "--recipe", str(recipe), "--round-to", "4", "-o", str(tmp_path / "cli.pt"), "--json"]
    )
    assert cli.exit_code == 0, cli.output
    assert load_model(tmp_path / "lib.pt").pruning["conv_widths"] == json.loads(cli.stdout)["conv_widths"]
    assert (res["method"], res["target_flops"], res["round_to"], res["out"]) == (
        "hao_li",
        0.6,
        4,
        str(tmp_path / "lib.pt"),
    )


def test_library_errors_name_parameters_and_the_command_names_its_options(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^`rate` must be in \[0, 1\), got 1.5$"):
        PruneOptions(rate=1.5).check(get_method("hao_li"), has_data=False)
    res = runner.invoke(app, ["prune", str(ckpt), "-m", "molchanov", "--rate", "0.5", "-o", str(tmp_path / "p.pt")])
    assert res.exit_code == 2 and "needs calibration images: give --data" in res.output and "`" not in res.output
