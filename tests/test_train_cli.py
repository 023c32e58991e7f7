from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.data.datasets import load_dataset
from reidcompress.models.checkpoint import load_model, load_raw, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.train import Callback, TrainConfig, train

runner = CliRunner()
OPTS = ["--device", "cpu", "--num-workers", "0", "-P", "4", "-K", "2"]
TINY = ["--arch", "tiny", "--input-size", "64x32", *OPTS]


def _run(data: Path, out: Path, epochs: int = 1) -> list[str]:
    return ["--data", str(data), "--epochs", str(epochs), "--out", str(out)]


def _rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_train_command_writes_model_state_log_and_best(synth_root, tmp_path) -> None:
    out = tmp_path / "m.pt"
    res = runner.invoke(app, ["train", *_run(synth_root, out, epochs=2), *TINY, "--eval-every", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["epochs"] == 2 and summary["best"]["epoch"] in (1, 2)
    rows = _rows(tmp_path / "m.log.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and all("mAP" in r and "rank1" in r for r in rows)
    model = load_model(out)
    assert model.meta["train"]["config"]["p"] == 4 and model.meta["dataset"]
    assert load_model(tmp_path / "m.best.pt").meta["epoch"] == summary["best"]["epoch"]
    state = load_raw(tmp_path / "m.state.pt")  # weights_only=True
    assert state["epoch"] == 2 and state["best"]["epoch"] == summary["best"]["epoch"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-K", "1"], "K (images per identity) must be >= 2"),
        (["-P", "500"], "fewer than P=500"),
        (["--set", "gamma"], "KEY=VALUE"),
        (["--set", "lr_decay=2"], "unknown training options"),
    ],
)
def test_train_command_bad_options(synth_root, tmp_path, extra, message) -> None:
    out = tmp_path / "m.pt"
    res = runner.invoke(app, ["train", *_run(synth_root, out), *TINY, *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not out.exists()


def test_train_command_without_data(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["train", *_run(tmp_path / "empty", tmp_path / "m.pt"), *TINY])
    assert res.exit_code == 2 and res.output.startswith("error:"), res.output


class _Crash(Callback):
    def on_epoch_start(self, trainer, epoch):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_with_real_loader_matches_straight_run(synth_root, tmp_path, workers) -> None:
    """Sampler epochs, per-epoch augmentation draws and optimiser state come back: identical weights."""
    ds = load_dataset(synth_root)
    config = TrainConfig(epochs=2, p=4, k=2, warmup_epochs=1, milestones=(1,), num_workers=workers, eval_every=0)

    def model() -> ReIDNet:
        torch.manual_seed(0)
        return ReIDNet(ReIDConfig(arch="tiny", num_classes=ds.num_train_pids, input_size=(64, 32)))

    a = train(model(), ds.train, config, out=tmp_path / "a.pt").model
    with pytest.raises(KeyboardInterrupt):
        train(model(), ds.train, config, out=tmp_path / "b.pt", callbacks=[_Crash()])
    b = train(model(), ds.train, config, out=tmp_path / "b.pt", resume=True).model
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def _pruned_tiny(num_classes: int) -> ReIDNet:
    shapes = {
        "backbone.layer1.0.conv1.weight": (8, 16, 3, 3),
        "backbone.layer1.0.bn1.weight": (8,),
        "backbone.layer1.0.conv2.weight": (16, 8, 3, 3),
    }
    return ReIDNet(ReIDConfig(arch="tiny", num_classes=num_classes, input_size=(64, 32)), shapes=shapes)


def test_finetune_keeps_pruned_shapes_and_record(synth_root, tmp_path) -> None:
    src, teacher, out = tmp_path / "pruned.pt", tmp_path / "teacher.pt", tmp_path / "ft.pt"
    record = {"method": "l1", "ratio": 0.5}
    save_model(src, _pruned_tiny(num_classes=3), pruning=record)
    save_model(teacher, ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32))))
    args = ["finetune", str(src), *_run(synth_root, out), "--teacher", str(teacher), *OPTS, "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    model = load_model(out)
    assert model.backbone.layer1[0].conv1.out_channels == 8
    assert model.pruning == record
    assert model.classifier.out_features == load_dataset(synth_root).num_train_pids
    assert model.meta["finetuned_from"] == str(src) and model.meta["teacher"] == str(teacher)
    assert _rows(tmp_path / "ft.log.jsonl")[0]["extra_loss"] > 0


def test_finetune_refuses_overwriting_its_input(synth_root, tmp_path) -> None:
    src = tmp_path / "m.pt"
    save_model(src, ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32))))
    res = runner.invoke(app, ["finetune", str(src), *_run(synth_root, src)])
    assert res.exit_code == 2 and "refusing to overwrite" in res.output


def test_two_process_gloo_run(synth_root, tmp_path) -> None:
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "reidcompress", "train", *_run(synth_root, out), *TINY, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 alone reports
    assert load_model(out).meta["train"]["world_size"] == 2
    assert [r["epoch"] for r in _rows(tmp_path / "ddp.log.jsonl")] == [1]
    assert load_raw(tmp_path / "ddp.state.pt")["epoch"] == 1


def test_train_command_resume_extends_a_finished_run(synth_root, tmp_path) -> None:
    out = tmp_path / "m.pt"
    first = runner.invoke(app, ["train", *_run(synth_root, out, epochs=1), *TINY, "--no-eval"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", *_run(synth_root, out, epochs=1), *TINY, "--no-eval", "--resume"])
    assert again.exit_code == 2 and "already finished 1 of 1 epochs" in again.output
    more = runner.invoke(app, ["train", *_run(synth_root, out, epochs=2), *TINY, "--no-eval", "--resume", "--json"])
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["epochs"] == 2
    assert [r["epoch"] for r in _rows(tmp_path / "m.log.jsonl")] == [1, 2]


class _Interrupt(Callback):
    def on_epoch_start(self, trainer, epoch) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_says_where_the_state_is_and_how_to_resume(synth_root, tmp_path, monkeypatch) -> None:
    import reidcompress.cli.train as train_cli

    def interrupted_train(*args, **kwargs):
        return train(*args, **kwargs, callbacks=[_Interrupt()])

    monkeypatch.setattr(train_cli, "train", interrupted_train)
    out = tmp_path / "m.pt"
    res = runner.invoke(app, ["train", *_run(synth_root, out, epochs=2), *TINY, "--no-eval"])
    assert res.exit_code == 130 and not out.exists()
    assert f"the last finished epoch is saved in {tmp_path / 'm.state.pt'}" in res.stderr
    assert "--resume" in res.stderr
