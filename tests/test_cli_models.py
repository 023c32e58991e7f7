from __future__ import annotations

import json

import torch
import torchvision
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.models.checkpoint import save_model

runner = CliRunner()


def test_import_then_info_json(tmp_path) -> None:
    src = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    out = tmp_path / "r18-reid.pt"
    res = runner.invoke(app, ["import", str(src), "--format", "torchvision", "--arch", "resnet18", "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["arch"] == "resnet18" and info["embedding_dim"] == 512
    assert info["input_size"] == [256, 128] and info["flops"] > 3e9 and info["params"] > 11e6


def test_info_table_for_people(tiny_model, tmp_path) -> None:
    path = save_model(tmp_path / "t.pt", tiny_model)
    res = runner.invoke(app, ["info", str(path)])
    assert res.exit_code == 0 and "GFLOPs" in res.stdout and "128-d" in res.stdout


def test_bad_inputs_exit_2_with_one_line(tmp_path) -> None:
    res = runner.invoke(app, ["info", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "not found" in res.output and res.output.count("\n") == 1
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    res = runner.invoke(app, ["info", str(bad)])
    assert res.exit_code == 2 and "error:" in res.output
    res = runner.invoke(app, ["import", str(bad), "--format", "caffe", "--out", str(tmp_path / "o.pt")])
    assert res.exit_code == 2 and "unknown format" in res.output
    assert not (tmp_path / "o.pt").exists()


def test_import_refuses_to_overwrite_input(tmp_path) -> None:
    src = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    before = src.read_bytes()
    res = runner.invoke(app, ["import", str(src), "-f", "torchvision", "--arch", "resnet18", "--out", str(src)])
    assert res.exit_code == 2 and src.read_bytes() == before
