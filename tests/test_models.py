from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from reidcompress.errors import ArchitectureError, CheckpointError, InputError
from reidcompress.models.checkpoint import load_model, read_checkpoint, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.resnet import build_backbone, list_models
from reidcompress.models.summary import complexity, count_flops, count_params, model_summary


def test_registry_lists_required_architectures() -> None:
    assert {"resnet18", "resnet34", "resnet50", "tiny"} <= set(list_models())
    with pytest.raises(ArchitectureError, match="resnet50"):
        build_backbone("vgg16")


@pytest.mark.parametrize(("arch", "dim"), [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("tiny", 128)])
def test_eval_returns_embedding_train_returns_feature_and_logits(arch: str, dim: int) -> None:
    model = ReIDNet(ReIDConfig(arch=arch, num_classes=7, input_size=(64, 32)))
    x = torch.rand(2, 3, 64, 32)
    model.train()
    feat, logits = model(x)
    assert feat.shape == (2, dim) and logits.shape == (2, 7)
    model.eval()
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (2, dim)
    assert model.embedding_dim == dim


def test_last_stride_one_doubles_final_map() -> None:
    x = torch.rand(1, 3, 128, 64)
    s1 = ReIDNet(ReIDConfig(arch="resnet18", last_stride=1)).eval().forward_features(x)
    s2 = ReIDNet(ReIDConfig(arch="resnet18", last_stride=2)).eval().forward_features(x)
    assert s1.shape[-2:] == (8, 4) and s2.shape[-2:] == (4, 2)


def test_bnneck_bias_frozen_and_gem_learnable() -> None:
    model = ReIDNet(ReIDConfig(arch="tiny", pooling="gem", num_classes=3))
    assert not model.bnneck.bias.requires_grad
    assert model.pool.p.requires_grad


def test_model_normalises_without_touching_callers_tensor(tiny_model: ReIDNet) -> None:
    x = torch.rand(2, 3, 64, 32)
    before = x.clone()
    tiny_model(x)
    assert torch.equal(x, before)
    # Normalisation is inside the model: a shifted mean changes the embedding.
    other = ReIDNet.from_state_dict(tiny_model.config.replace(mean=(0.0, 0.0, 0.0)), tiny_model.state_dict()).eval()
    assert not torch.allclose(other(x), tiny_model(x))


def test_flops_from_flop_counter_match_reference_numbers() -> None:
    model = ReIDNet(ReIDConfig(arch="resnet50"))
    assert count_flops(model, (256, 128)) == pytest.approx(8.11e9, rel=0.01)
    assert count_params(model) == pytest.approx(23.51e6, rel=0.01)
    cost = complexity(model)
    assert cost.input_size == (256, 128)
    assert cost.flops == count_flops(model, (256, 128)) and cost.params == count_params(model)
    assert cost.macs == cost.flops // 2
    # Every conv's cost scales with the pixels: a quarter of them, a quarter of the FLOPs.
    assert complexity(model, (128, 64)).flops == pytest.approx(cost.flops / 4, rel=0.01)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_roundtrip_identical(tiny_model: ReIDNet, tmp_path, suffix: str) -> None:
    path = save_model(tmp_path / f"m{suffix}", tiny_model, meta={"note": "x"})
    loaded = load_model(path)
    x = torch.rand(3, 3, 64, 32)
    assert torch.equal(loaded(x), tiny_model(x))
    assert loaded.config == tiny_model.config
    assert loaded.meta["note"] == "x"
    assert not list(tmp_path.glob(".*tmp"))


def _shrink(model: ReIDNet) -> ReIDNet:
    """Remove channels from layer1's first conv by hand, as a pruner would."""
    block = model.backbone.layer1[0]
    keep = torch.tensor([0, 2, 3, 5, 7])
    conv1 = nn.Conv2d(block.conv1.in_channels, len(keep), 3, 1, 1, bias=False)
    conv1.weight.data = block.conv1.weight.data[keep].clone()
    bn = nn.BatchNorm2d(len(keep))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data = getattr(block.bn1, name).data[keep].clone()
    conv2 = nn.Conv2d(len(keep), block.conv2.out_channels, 3, 1, 1, bias=False)
    conv2.weight.data = block.conv2.weight.data[:, keep].clone()
    block.conv1, block.bn1, block.conv2 = conv1, bn, conv2
    return model


def test_pruned_checkpoint_rebuilds_from_shapes(tiny_model: ReIDNet, tmp_path) -> None:
    pruned = _shrink(tiny_model).eval()
    record = {"method": "manual", "rate": 0.2, "channels": {"backbone.layer1.0.conv1": 5}}
    path = save_model(tmp_path / "p.pt", pruned, pruning=record)
    loaded = load_model(path)
    assert loaded.backbone.layer1[0].conv1.out_channels == 5
    assert loaded.pruning == record
    x = torch.rand(2, 3, 64, 32)
    assert torch.equal(loaded(x), pruned(x))
    # The checkpoint is plain data: no module objects are pickled.
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"config", "state_dict", "pruning", "embedding_dim"}


def test_model_summary_keys(tiny_model: ReIDNet) -> None:
    s = model_summary(tiny_model)
    assert {"arch", "params", "flops", "macs", "input_size", "embedding_dim"} <= set(s)
    assert s["flops"] == 2 * s["macs"] and s["embedding_dim"] == 128


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_checkpoints_give_clear_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt|not a"):
        load_model(garbage)
    # Plain text and empty files fail inside the unpickler with KeyError / IndexError.
    for i, text in enumerate([b"hello, not a checkpoint\n", b"some notes\n", b""]):
        (tmp_path / f"text{i}.pt").write_bytes(text)
        with pytest.raises(CheckpointError, match="corrupt or not a PyTorch checkpoint"):
            load_model(tmp_path / f"text{i}.pt")
    marker = tmp_path / "owned"
    # Protocol 2 reaches the global (refused by name); torch's unpickler stops at protocol 4's framing first.
    for protocol, message in ((2, "refusing to load: the file pickles posix.system"), (4, "corrupt or not")):
        evil = tmp_path / f"evil{protocol}.pt"
        evil.write_bytes(pickle.dumps({"format": "reidcompress.checkpoint", "x": _Evil(marker)}, protocol=protocol))
        with pytest.raises(CheckpointError, match=message):
            load_model(evil)
    evil = tmp_path / "evil-zip.pt"
    torch.save({"state_dict": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(evil)
    assert not marker.exists()
    code = tmp_path / "code.pt"
    torch.save({"model": nn.Linear(2, 2)}, code)
    with pytest.raises(CheckpointError, match="refusing"):
        load_model(code)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="reidcompress import"):
        read_checkpoint(foreign)


def test_weights_of_wrong_architecture_rejected(tiny_model: ReIDNet) -> None:
    with pytest.raises(ArchitectureError, match="do not fit"):
        ReIDNet.from_state_dict(ReIDConfig(arch="resnet18"), tiny_model.state_dict())
