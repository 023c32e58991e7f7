"""The survey tools end to end on tiny synthetic data: Table 5, the cross-domain scenarios, resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from reidcompress.models.checkpoint import load_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.survey import runs, table5_markdown
from reidcompress.survey.runs import Overrides, Setup, pretrained_checkpoint, split_budget
from reidcompress.train import engine, finetune

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--input-size", "64x32", "--epochs", "1", "--finetune-epochs", "1", "--round-to", "4"]
TINY += ["--num-workers", "0", "--device", "cpu"]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _forbid_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run must neither train nor evaluate."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(runs, "train", boom)
    monkeypatch.setattr(engine, "train", boom)
    monkeypatch.setattr(finetune, "train", boom)
    monkeypatch.setattr(runs.Run, "metrics", boom)


def _rows(work: Path, name: str) -> list[dict]:
    return json.loads((work / name).read_text())["rows"]


def test_table5_end_to_end_then_resume(tmp_path, synth_root, monkeypatch, capsys) -> None:
    tool, work = _tool("reproduce_table5"), tmp_path / "t5"
    argv = ["--market", str(synth_root), "--work", str(work), "--archs", "tiny", "--prune-arch", "tiny"]
    argv += [*TINY, "--methods", "hao_li"]
    assert tool.main(argv) == 0
    first = capsys.readouterr()
    rows = {r["name"]: r["results"]["market"] for r in _rows(work, "table5.json")}
    assert list(rows) == ["tiny", "hao_li"]
    base, pruned = rows["tiny"], rows["hao_li"]
    assert abs(pruned["flops_ratio"] - 0.5) <= 0.02 * 0.5 and pruned["params"] < base["params"]
    assert pruned["before"] is not None and (pruned["own_epochs"], pruned["tail_epochs"]) == (0, 1)
    model = load_model(pruned["checkpoint"])
    assert model.pruning["method"] == "hao_li" and model.embedding_dim == load_model(base["checkpoint"]).embedding_dim
    # The pruned network was fine-tuned as `reidcompress finetune` does it: a new ID classifier first.
    assert model.meta["finetuned_from"].endswith("hao_li-pruned.pt")
    doc = (work / "TABLE5.md").read_text()
    assert "| hao_li (tiny) |" in doc and "Market-1501 mAP / R-1" in doc and "tiny: random init" in doc
    assert "in parentheses" not in doc and "the survey has no numbers for these networks" in doc
    assert f"{pruned['after']['mAP']:.2f} / {pruned['after']['rank1']:.2f}" in first.out

    _forbid_work(monkeypatch)
    assert tool.main(argv) == 0
    second = capsys.readouterr()
    assert second.out == first.out and second.err.count(": reused") == 3

    # A longer fine-tuning re-runs the fine-tuning alone.
    monkeypatch.undo()
    assert tool.main([*argv, "--finetune-epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert "tiny baseline: reused" in err and "hao_li: prune: reused" in err and "fine-tune: reused" not in err
    assert _rows(work, "table5.json")[1]["results"]["market"]["tail_epochs"] == 2


def test_scenarios_end_to_end_then_resume(tmp_path, synth_root, synth_target_root, monkeypatch, capsys) -> None:
    tool, work = _tool("scenarios"), tmp_path / "sc"
    argv = ["--source", str(synth_root), "--target", str(synth_target_root), "--work", str(work), "--arch", "tiny"]
    argv += [*TINY, "--methods", "hao_li", "--training-methods", "psfp"]
    assert tool.main(argv) == 0
    first = capsys.readouterr()
    rows = _rows(work, "scenarios.json")
    assert [(r["scenario"], r["method"]) for r in rows] == [
        ("reference", "-"),
        ("reference", "-"),
        ("reference", "-"),
        ("a", "hao_li"),
        ("b", "hao_li"),
        ("c", "psfp"),
    ]
    a, b, c = rows[3:]
    assert [r["target_epochs"] for r in rows] == [0, 1, 2, 1, 2, 1]
    for r in (a, b, c):
        assert abs(r["flops_ratio"] - 0.5) <= 0.02 * 0.5
    assert a["before"] is not None and b["before"] is not None and c["before"] is None
    # Every pruned model ends trained on the target (psfp: its pruning epochs), and (a) pruned on the source.
    target = str(synth_target_root)
    for r in (a, b, c):
        assert load_model(r["checkpoint"]).meta["data_root"] == target, r["scenario"]
    assert load_model(work / "a" / "hao_li-pruned.pt").meta["prune_data_root"] == str(synth_root)
    assert "| (c) | psfp |" in (work / "SCENARIOS.md").read_text()

    _forbid_work(monkeypatch)
    assert tool.main(argv) == 0
    second = capsys.readouterr()
    assert second.out == first.out and "ran again" not in second.err


def test_interrupted_baseline_resumes_from_its_last_epoch(tmp_path, synth_root, monkeypatch) -> None:
    from reidcompress.train.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_start(self, trainer, epoch) -> None:
            if epoch == 1:
                raise KeyboardInterrupt

    calls: list[bool] = []
    real = runs.train

    def spy(*args, callbacks=(), resume=False, **kwargs):
        calls.append(resume)
        return real(*args, callbacks=(*callbacks, *([Interrupt()] if len(calls) == 1 else [])), resume=resume, **kwargs)

    monkeypatch.setattr(runs, "train", spy)
    tool, work = _tool("reproduce_table5"), tmp_path / "t5"
    argv = ["--market", str(synth_root), "--work", str(work), "--archs", "tiny", "--prune-arch", "tiny", *TINY]
    argv += ["--epochs", "2", "--methods"]
    with pytest.raises(KeyboardInterrupt):
        tool.main(argv)
    assert not (work / "market" / "tiny.pt").exists() and (work / "market" / "tiny.state.pt").exists()
    assert tool.main(argv) == 0
    assert calls == [False, True]
    log = [json.loads(line) for line in (work / "market" / "tiny.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("reproduce_table5", [], "at least one dataset"),
        ("reproduce_table5", ["--market", "{tmp}/missing"], "dataset folder not found"),
        ("reproduce_table5", ["--market", "{data}", "--methods", "nope"], "unknown pruning method 'nope'"),
        ("reproduce_table5", ["--market", "{data}", "--target-flops", "1.5"], "--target-flops must be in (0, 1]"),
        ("reproduce_table5", ["--market", "{data}", "--pretrained", "resnet101={data}"], "does not train"),
        ("reproduce_table5", ["--market", "{data}", "--archs", "tiny", "--pretrained", "tiny={tmp}/x"], "not found"),
        ("scenarios", ["--source", "{data}", "--target", "{data}", "--training-methods", "hao_li"], "prunes once"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, synth_root, capsys, tool, args, message) -> None:
    work = tmp_path / "work"
    argv = [a.format(tmp=tmp_path, data=synth_root) for a in args]
    assert _tool(tool).main([*argv, "--work", str(work), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (work / "stages.json").exists()


def test_table5_markdown_puts_the_survey_beside_ours() -> None:
    def res(params: float, gflops: float, ratio: float, mAP: float, r1: float) -> dict:
        after = {"mAP": mAP, "rank1": r1, "mINP": 0.0}
        return {"params": params * 1e6, "flops": gflops * 1e9, "flops_ratio": ratio, "after": after, "before": None}

    pruned = res(10.34, 3.66, 0.451, 80.0, 90.0) | {"channels_removed": 0.5, "own_epochs": 0, "tail_epochs": 60}
    pruned["before"] = {"mAP": 40.0, "rank1": 60.0}
    base = res(23.51, 8.11, 1, 86, 94)
    r50 = {"name": "resnet50", "kind": "baseline", "label": "resnet50", "results": {"market": base}}
    hao_li = {"name": "hao_li", "kind": "pruned", "label": "hao_li (resnet50)", "results": {"market": pruned}}
    result = {"datasets": {"market": {}, "extra": {}}, "prune_arch": "resnet50", "rows": [r50, hao_li]}
    lines = table5_markdown(result)
    assert lines[0].startswith("| network | params (M) | GFLOPs | FLOPs ratio | Market-1501 mAP / R-1 | extra")
    assert lines[2] == "| resnet50 | 23.51 (23.48) | 8.110 (6.32) | 1.00 (1.00) | 86.00 / 94.00 (69.16 / 85.07) | - |"
    assert (
        lines[3]
        == "| hao_li (resnet50) | 10.34 (11.90) | 3.660 (2.96) | 0.45 (0.47) | 80.00 / 90.00 (67.04 / 84.71) | - |"
    )
    assert "| hao_li (resnet50) | Market-1501 | 0.451 | 0.50 | 0 | 60 | 40.00 / 60.00 | 80.00 / 90.00 |" in lines


def test_budget_split_and_recipe_fallback() -> None:
    assert split_budget("hao_li", 15) == (0, 15)
    assert split_budget("psfp", 15) == (15, 0)
    assert split_budget("auto_balanced", 15) == (10, 5)
    assert split_budget("afp", 15) == split_budget("play_and_prune", 15) == (10, 5)
    setup = Setup.make("tiny", changes=Overrides(input_size=(64, 32), finetune_epochs=6))
    assert setup.recipe.endswith("resnet50.json") and setup.model["input_size"] == (64, 32)
    assert setup.train["epochs"] == 120 and setup.finetune["epochs"] == 6 and setup.finetune["milestones"] == [3, 5]
    assert setup.prune == {"target_flops": 0.5, "scope": "local", "round_to": 8, "residual": False}


def test_torchvision_weights_are_imported_as_the_trunk(tmp_path) -> None:
    trunk = ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32))).backbone.state_dict()
    torch.save(trunk, tmp_path / "tiny-imagenet.pth")
    init = pretrained_checkpoint("tiny", tmp_path / "tiny-imagenet.pth", tmp_path / "work")
    assert init.checkpoint is not None and init.checkpoint.parent == tmp_path / "work" / "pretrained"
    assert "ImageNet trunk" in init.describe() and init.sha256
    model = Setup.make("tiny", changes=Overrides(input_size=(64, 32))).build(7, init.checkpoint)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in trunk.items())
    assert pretrained_checkpoint("tiny", init.checkpoint, tmp_path / "w2").checkpoint == init.checkpoint
    assert pretrained_checkpoint("tiny", None, tmp_path).describe() == "tiny: random init (no ImageNet weights given)"


@pytest.mark.slow
def test_table5_full_matrix_on_three_benchmark_layouts(tmp_path, synth_root, monkeypatch, capsys) -> None:
    """The survey's five methods and fpgm, the control row, all three columns, auto-balanced's split, resume."""
    from reidcompress.data.synth import synthesize

    cuhk03 = tmp_path / "cuhk03"  # CUHK03-NP has 2 cameras
    synthesize(cuhk03, ids=12, cams=2, images_per_id=6, seed=3, size=(64, 32))
    tool, work = _tool("reproduce_table5"), tmp_path / "t5"
    argv = ["--market", str(synth_root), "--duke", str(synth_root), "--cuhk03", str(cuhk03), "--work", str(work)]
    argv += ["--archs", "tiny", "--prune-arch", "tiny", *TINY, "--finetune-epochs", "3", "--extra-methods", "fpgm"]
    assert tool.main([*argv, "--control"]) == 0
    first = capsys.readouterr()
    rows = {r["name"]: r for r in _rows(work, "table5.json")}
    names = ["tiny", "control", "hao_li", "molchanov", "auto_balanced", "entropy", "psfp", "fpgm"]
    assert list(rows) == names
    for name in names[2:]:
        assert set(rows[name]["results"]) == {"market", "duke", "cuhk03"}
        for r in rows[name]["results"].values():
            assert abs(r["flops_ratio"] - 0.5) <= 0.02 * 0.5, name
    ab = rows["auto_balanced"]["results"]["market"]
    assert (ab["own_epochs"], ab["tail_epochs"]) == (2, 1) and ab["before"] is not None
    assert rows["psfp"]["results"]["duke"]["before"] is None
    header = first.out.splitlines()[0]
    assert "Market-1501 mAP / R-1 | DukeMTMC-reID mAP / R-1 | CUHK03-NP mAP / R-1" in header
    _forbid_work(monkeypatch)
    assert tool.main([*argv, "--control"]) == 0
    assert capsys.readouterr().out == first.out


def test_table5_synthetic_tool(tmp_path) -> None:
    work, doc = tmp_path / "t5", tmp_path / "t5.md"
    argv = ["--work", str(work), "--doc", str(doc), "--arch", "tiny", "--size", "64x32", "--ids", "12"]
    argv += ["--cams", "3", "--images-per-id", "6", "--baseline-epochs", "1", "--epochs", "1", "--round-to", "4"]
    assert _tool("table5_synthetic").main([*argv, "--methods", "hao_li", "psfp"]) == 0
    text = doc.read_text()
    for row in ("| tiny |", "| tiny + 1 epochs, unpruned |", "| hao_li (tiny) |", "| psfp (tiny) |"):
        assert row in text
