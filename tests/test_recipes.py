from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.cli._train_options import config_from_options
from reidcompress.errors import InputError
from reidcompress.models.checkpoint import load_model
from reidcompress.models.recipes import list_recipes, load_recipe
from reidcompress.models.reid import ReIDConfig
from reidcompress.train.config import TrainConfig

runner = CliRunner()


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_shipped_recipes_are_valid(name: str) -> None:
    assert name in list_recipes()
    r = load_recipe(name)
    ReIDConfig(arch=r.model["arch"], input_size=tuple(r.model["input_size"]), last_stride=r.model["last_stride"])
    assert TrainConfig.from_dict(r.train).milestones == (40, 70)
    TrainConfig.from_dict(r.finetune)
    assert r.prune["target_flops"] == 0.5


def test_epochs_override_scales_the_recipe_schedule() -> None:
    r = load_recipe("resnet50")
    assert config_from_options(None, {}, None, r.train).epochs == 120
    c = config_from_options(12, {}, None, r.train)
    assert (c.epochs, c.warmup_epochs, c.milestones) == (12, 1, (4, 7))
    c = config_from_options(12, {"lr": 1e-3, "milestones": "5"}, ["gamma=0.5"], r.train)
    assert (c.lr, c.milestones, c.gamma) == (1e-3, (5,), 0.5)
    with pytest.raises(InputError, match="--epochs is required"):
        config_from_options(None, {}, None, None)


def test_bad_recipes(tmp_path) -> None:
    with pytest.raises(InputError, match="not found; known recipes: .*resnet50"):
        load_recipe("resnet999")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON recipe"):
        load_recipe(bad)
    bad.write_text(json.dumps({"trian": {}}))
    with pytest.raises(InputError, match="unknown recipe keys"):
        load_recipe(bad)


def test_train_command_takes_a_recipe_file(synth_root, tmp_path) -> None:
    recipe = tmp_path / "tiny.json"
    recipe.write_text(
        json.dumps(
            {
                "model": {"arch": "tiny", "input_size": [64, 32], "pooling": "gem"},
                "train": {"epochs": 1, "lr": 1e-3, "p": 3, "k": 2, "num_workers": 0},
            }
        )
    )
    out = tmp_path / "m.pt"
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(synth_root),
            "--recipe",
            str(recipe),
            "--out",
            str(out),
            "--no-eval",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    model = load_model(out)
    assert model.config.arch == "tiny" and model.config.input_size == (64, 32) and model.config.pooling == "gem"
    assert json.loads(res.stdout.strip().splitlines()[-1])["epochs"] == 1
    res = runner.invoke(app, ["train", "--data", str(synth_root), "--recipe", "nope", "--out", str(tmp_path / "x.pt")])
    assert res.exit_code == 2 and "recipe 'nope' not found" in res.output


def test_prune_settings_from_a_recipe_under_the_given_ones() -> None:
    from reidcompress.prune.options import with_recipe

    fields, train = with_recipe("resnet50", {"method": None, "rate": None, "scope": "global", "target_latency": None})
    assert fields == {"method": "hao_li", "target_flops": 0.5, "scope": "global", "round_to": 8, "residual": False}
    # Fine-tuning settings without the run lengths: each pruning-time fit scales its own schedule.
    assert train["lr"] == 0.00035 and train["p"] == 16 and not {"epochs", "milestones", "warmup_epochs"} & set(train)
    fields, _ = with_recipe("resnet50", {"target_latency": 8.0})
    assert "target_flops" not in fields and fields["target_latency"] == 8.0


@pytest.mark.parametrize(("name", "rank1"), [("osnet_x1_0", 94.2), ("resnet50_ibn_a", 94.9)])
def test_framework_recipes_build_their_architecture(name: str, rank1: float) -> None:
    r = load_recipe(name)
    config = ReIDConfig(
        arch=r.model["arch"], input_size=tuple(r.model["input_size"]), last_stride=r.model["last_stride"]
    )
    assert config.arch == name and config.input_size == (256, 128)
    TrainConfig.from_dict(r.train)
    TrainConfig.from_dict(r.finetune)
    assert r.reference["market"][1] == rank1
