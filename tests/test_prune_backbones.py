"""Pruning beyond ResNets: depthwise convs, OSNet's shared channel gates, IBN and InstanceNorm layers,
and every registered method on every architecture family (tiny widths here, full size with -m slow)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from reidcompress.data.datasets import load_dataset
from reidcompress.export.onnx import write_onnx
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.resnet_ibn import IBN
from reidcompress.models.summary import count_flops
from reidcompress.prune import PruneData, PruneOptions, prune_model
from reidcompress.prune._pruners import is_depthwise
from reidcompress.prune.criteria import L1Norm
from reidcompress.prune.engine import (
    ScoredGroup,
    apply_plan,
    build_graph,
    score_groups,
    select_channels,
    zero_channels,
)
from reidcompress.prune.planning import FlopModel, kept_for_rate
from reidcompress.prune.registry import get_method, list_methods
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.testing import randomise_norms

TINY = ["osnet_tiny", "osnet_ibn_tiny", "osnet_ain_tiny", "mobilenetv2_tiny", "resnet_ibn_a_tiny", "resnet_ibn_b_tiny"]
FULL = [
    "osnet_x1_0",
    "osnet_x0_25",
    "osnet_ain_x1_0",
    "osnet_ibn_x1_0",
    "mobilenetv2_x1_0",
    "resnet50_ibn_a",
    "resnet50_ibn_b",
]
SIZE = (64, 32)
NEEDS_RESIDUAL = {"osnet_x0_25"}


def _tiny(arch: str, num_classes: int = 0) -> ReIDNet:
    return randomise_norms(ReIDNet(ReIDConfig(arch=arch, input_size=SIZE, num_classes=num_classes)))


def test_ibn_pruned_computes_what_a_fresh_ibn_of_the_new_widths_computes() -> None:
    model = _tiny("resnet_ibn_a_tiny")
    ibn = model.backbone.layer1[0].bn1
    assert isinstance(ibn, IBN) and (ibn.IN.num_features, ibn.BN.num_features) == (4, 4)
    original = copy.deepcopy(ibn)
    x = torch.randn(2, 8, 16, 8)
    with torch.no_grad():
        ref = original(x)
    removed = [1, 2, 5]  # two InstanceNorm channels, one BatchNorm channel
    kept = [c for c in range(8) if c not in removed]
    group = build_graph(model).get_pruning_group(model.backbone.layer1[0].conv1, tp.prune_conv_out_channels, removed)
    group.prune()
    assert (ibn.half, ibn.IN.num_features, ibn.BN.num_features) == (2, 2, 3)  # the split point moved
    # A fresh IBN of the new widths (IBN(5): InstanceNorm on 2, BatchNorm on 3), given the kept channels'
    # parameters of the unpruned layer: the unpruned network's own channels are the reference.
    fresh = IBN(5).eval()
    with torch.no_grad():
        fresh.IN.weight.copy_(original.IN.weight[[0, 3]])
        fresh.IN.bias.copy_(original.IN.bias[[0, 3]])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(fresh.BN, name).copy_(getattr(original.BN, name)[[0, 2, 3]])
        assert torch.equal(ibn(x[:, kept]), fresh(x[:, kept]))
        assert torch.equal(ibn(x[:, kept]), ref[:, kept])
    assert model.backbone.layer1[0].conv2.in_channels == 5


def test_selection_keeps_a_channel_in_each_ibn_half() -> None:
    """A criterion that ranks a whole InstanceNorm half lowest must not empty it: its best channel stays and
    the next lowest-scored channel of the other half goes instead."""
    scores = torch.tensor([0.0, 1, 2, 3, 9, 8, 7, 6])
    group = ScoredGroup("c", scores, (), (), False, keep_one_of=((0, 1, 2, 3), (4, 5, 6, 7)))
    assert select_channels([group], {"c": 4}) == {"c": [0, 1, 2, 7]}
    assert select_channels([group], {"c": 5}) == {"c": [0, 1, 2]}  # nothing to balance
    model = _tiny("resnet_ibn_a_tiny")
    ibn_groups = [g for g in score_groups(model, L1Norm(), residual=False) if g.keep_one_of]
    assert ibn_groups  # every IBN layer's conv, with its two halves
    for g in ibn_groups:
        assert sorted(i for part in g.keep_one_of for i in part) == list(range(g.size))


@pytest.mark.parametrize("arch", TINY)
def test_zeroed_channels_are_removed_without_changing_the_output(arch: str) -> None:
    """Every group (residual ones too) loses 40% of its channels. Silencing them first (filters and
    norm scales and shifts at zero) must give the very output of the pruned network: any member the
    graph failed to couple (a depthwise conv, a shared gate's fc, an IBN half, an InstanceNorm) changes it."""
    model = _tiny(arch)
    flop_model = FlopModel.of(model, SIZE)
    groups = score_groups(model, L1Norm(), residual=True)
    kept = kept_for_rate(groups, 0.4, round_to=1)
    plan = select_channels(groups, kept)
    x = torch.rand(3, 3, *SIZE)
    zero_channels(model, build_graph(model), plan)
    with torch.no_grad():
        silenced = model(x)
    apply_plan(model, plan)
    with torch.no_grad():
        pruned = model(x)
    torch.testing.assert_close(pruned, silenced, rtol=1e-4, atol=1e-5)
    # The FLOPs model (a depthwise conv costs per channel, not per channel pair) predicts the pruned network.
    assert flop_model.estimate(groups, kept) == pytest.approx(count_flops(model, SIZE), rel=0.005)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert is_depthwise(m) and m.in_channels == m.out_channels == m.weight.shape[0]
        if hasattr(m, "gate") and hasattr(m.gate, "fc1"):  # OSNet: the gate follows its four streams
            assert m.gate.fc1.in_channels == m.gate.fc2.out_channels == m.conv3.conv.in_channels
        if isinstance(m, IBN):
            assert m.half == m.IN.num_features


def _data(root: Path, method: str) -> PruneData:
    """Six identities, two images each (an epoch of P x K = 4 x 2 batches is two steps), or, for the
    methods paced by held-out accuracy, the whole small training split (they hold identities out)."""
    if get_method(method).strategy.startswith("adaptive"):
        return PruneData(items=tuple(load_dataset(root).train), p=4, k=2)
    items, seen = [], {}
    for item in load_dataset(root).train:
        if seen.get(item.pid, 0) < 2 and (item.pid in seen or len(seen) < 6):
            seen[item.pid] = seen.get(item.pid, 0) + 1
            items.append(item)
    return PruneData(items=tuple(items), p=4, k=2)


def _options(method: str) -> PruneOptions:
    spec = get_method(method)
    epochs = 1 if spec.needs_training else 0
    return PruneOptions(target_flops=0.5, round_to=1, residual=True, calib_batches=1, epochs=epochs)


def check_guarantees(model: ReIDNet, record: dict, tmp_path: Path, dim: int) -> None:
    """FLOPs within 2% of the target, embedding kept, weights_only reload identical, ONNX matches."""
    assert abs(record["flops_ratio"] - 0.5) <= 0.02 * 0.5 and record["target_met"]
    assert record["flops_after"] == count_flops(model, model.config.input_size)
    assert model.embedding_dim == record["embedding_dim"] == dim
    path = save_model(tmp_path / "p.pt", model, pruning=record)
    reloaded = load_model(path)  # weights_only, rebuilt from the stored shapes
    x = torch.rand(2, 3, *model.config.input_size)
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), model.eval()(x))
    # The TorchScript exporter (opset 17, the TensorRT 8.x path): the dynamo exporter takes ~7x longer on OSNet.
    write_onnx(reloaded, tmp_path / "p.onnx", opset=17)
    with OnnxEmbedder(tmp_path / "p.onnx") as onnx_model:
        got = onnx_model.embed(x.numpy())
    ref = model(x).detach().numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999


# Each method on two tiny architectures in turn, each architecture under two methods: the default suite
# (a case takes 10-140 s on this shared 2-core machine). The full cross product runs with -m slow.
ROTATION = [(m, TINY[i % len(TINY)]) for i, m in enumerate(list_methods())]
CROSS = [(m, a) for m in list_methods() for a in TINY if (m, a) not in ROTATION]


def test_the_rotation_covers_every_method_and_architecture() -> None:
    assert {m for m, _ in ROTATION} == set(list_methods()) and {a for _, a in ROTATION} == set(TINY)


@pytest.mark.parametrize(("method", "arch"), ROTATION)
def test_every_method_prunes_every_architecture(method: str, arch: str, synth_root: Path, tmp_path: Path) -> None:
    _prune_tiny(method, arch, synth_root, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "arch"), CROSS)
def test_every_method_prunes_every_architecture_cross(method: str, arch: str, synth_root: Path, tmp_path: Path) -> None:
    _prune_tiny(method, arch, synth_root, tmp_path)


def _prune_tiny(method: str, arch: str, synth_root: Path, tmp_path: Path) -> None:
    spec = get_method(method)
    model = _tiny(arch, num_classes=4 if spec.needs_training else 0)
    dim = model.embedding_dim
    data = _data(synth_root, method) if spec.needs_data else None
    record = prune_model(model, method, _options(method), data)
    check_guarantees(model, record, tmp_path, dim)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FULL)
@pytest.mark.parametrize("method", list_methods())
def test_every_method_prunes_every_architecture_full_size(
    method: str, arch: str, synth_root: Path, tmp_path: Path
) -> None:
    spec = get_method(method)
    model = randomise_norms(ReIDNet(ReIDConfig(arch=arch, num_classes=4 if spec.needs_training else 0)))
    dim = model.embedding_dim
    data = _data(synth_root, method) if spec.needs_data else None
    # osnet_x0_25's block-internal channels (16-32 wide, rounded to 8) hold too few FLOPs to halve them
    # (at most 0.344 can go): like the CLI's error says, it needs the residual channels too.
    options = PruneOptions(
        target_flops=0.5, calib_batches=1, epochs=_options(method).epochs, residual=arch in NEEDS_RESIDUAL
    )
    record = prune_model(model, method, options, data)
    check_guarantees(model, record, tmp_path, dim)
