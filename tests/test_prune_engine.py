"""The dependency-graph engine and channel planning on the tiny ReID net."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reidcompress.errors import MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import conv_widths, count_flops
from reidcompress.prune.criteria import L1Norm
from reidcompress.prune.engine import (
    ScoredGroup,
    apply_plan,
    build_graph,
    score_groups,
    select_channels,
    zero_channels,
)
from reidcompress.prune.planning import FlopModel, kept_for_flops, kept_for_rate, round_kept
from reidcompress.prune.strategies.regularised import balanced_decay_
from reidcompress.prune.strategies.soft import exponential_schedule

INTERNAL = ["backbone.layer1.0.conv1", "backbone.layer2.0.conv1", "backbone.layer3.0.conv1", "backbone.layer4.0.conv1"]


def _widths_changed(before: dict[str, int], model: nn.Module) -> set[str]:
    after = conv_widths(model)
    return {k for k in before if after[k] != before[k]}


def test_block_internal_groups_only_by_default(tiny_model: ReIDNet) -> None:
    groups = score_groups(tiny_model, L1Norm(), residual=False)
    assert sorted(g.root for g in groups) == INTERNAL
    assert not any(g.residual for g in groups)


def test_residual_adds_the_coupled_stream_groups_but_protects_stem_and_embedding(tiny_model: ReIDNet) -> None:
    groups = score_groups(tiny_model, L1Norm(), residual=True)
    residual = [g for g in groups if g.residual]
    # layer1's stream is coupled with the stem (protected), layer4's is the embedding (protected).
    assert sorted(c for g in residual for c in g.out_convs) == [
        "backbone.layer2.0.conv2", "backbone.layer2.0.downsample.0",
        "backbone.layer3.0.conv2", "backbone.layer3.0.downsample.0",
    ]  # fmt: skip


@pytest.mark.parametrize("residual", [False, True])
def test_which_convs_shrink(tiny_model: ReIDNet, residual: bool) -> None:
    before = conv_widths(tiny_model)
    groups = score_groups(tiny_model, L1Norm(), residual)
    apply_plan(tiny_model, select_channels(groups, kept_for_rate(groups, 0.5)))
    changed = _widths_changed(before, tiny_model)
    assert set(INTERNAL) <= changed
    assert ("backbone.layer2.0.downsample.0" in changed) is residual
    assert "backbone.conv1" not in changed and "backbone.layer4.0.conv2" not in changed
    assert tiny_model.embedding_dim == 128 and tiny_model.classifier.in_features == 128
    assert tiny_model(torch.rand(2, 3, 64, 32)).shape == (2, 128)


def test_flop_model_matches_the_real_surgery(tiny_model: ReIDNet) -> None:
    flop_model = FlopModel.of(tiny_model, (64, 32))
    assert flop_model.total == count_flops(tiny_model, (64, 32))
    groups = score_groups(tiny_model, L1Norm(), residual=True)
    kept = {g.root: max(1, g.size // (i + 2)) for i, g in enumerate(groups)}
    apply_plan(tiny_model, select_channels(groups, kept))
    assert flop_model.estimate(groups, kept) == count_flops(tiny_model, (64, 32))


def test_select_channels_removes_the_lowest_scores() -> None:
    g = ScoredGroup("c", torch.tensor([3.0, 0.5, 2.0, 0.1, 9.0]), ("c",), (), False)
    assert select_channels([g], {"c": 3}) == {"c": [1, 3]}
    assert select_channels([g], {"c": 5}) == {"c": []}


def test_round_kept() -> None:
    assert round_kept(31.0, 64, 8) == 32
    assert round_kept(3.0, 64, 8) == 8  # never below one multiple
    assert round_kept(64.0, 64, 8) == 64
    assert round_kept(19.0, 19, 8) == 19  # rate 0 keeps an odd width whole
    assert round_kept(5.0, 6, 8) == 6  # too narrow to round: untouched


def _groups(*score_lists: list[float]) -> list[ScoredGroup]:
    return [ScoredGroup(f"g{i}", torch.tensor(s), (f"g{i}",), (), False) for i, s in enumerate(score_lists)]


def test_local_and_global_scope() -> None:
    low, high = [1.0, 1.1, 1.2, 1.3] * 4, [5.0, 1.0] * 8
    groups = _groups(low, high)
    assert kept_for_rate(groups, 0.5, scope="local") == {"g0": 8, "g1": 8}
    # Globally, after per-group mean normalisation, g1's many 1.0 channels are its weak half.
    kept = kept_for_rate(groups, 0.5, scope="global")
    assert sum(kept.values()) == 16 and kept["g1"] == 8
    skewed = kept_for_rate(_groups([0.1] * 8 + [1.0] * 8, [1.0] * 16), 0.25, scope="global")
    assert skewed == {"g0": 8, "g1": 16}
    assert kept_for_rate(groups, 0.3, scope="local", round_to=4) == {"g0": 12, "g1": 12}
    with pytest.raises(MethodError):
        kept_for_rate(groups, 0.5, scope="everywhere")


@pytest.mark.parametrize(("scope", "residual", "round_to"), [("local", False, 1), ("global", True, 4)])
def test_flops_target_within_two_percent(tiny_model: ReIDNet, scope: str, residual: bool, round_to: int) -> None:
    flops0 = count_flops(tiny_model, (64, 32))
    groups = score_groups(tiny_model, L1Norm(), residual)
    kept = kept_for_flops(groups, FlopModel.of(tiny_model, (64, 32)), 0.5 * flops0, scope=scope, round_to=round_to)
    assert all(k % round_to == 0 for k in kept.values())
    apply_plan(tiny_model, select_channels(groups, kept))
    assert abs(count_flops(tiny_model, (64, 32)) / flops0 - 0.5) <= 0.01


def test_unreachable_flops_target_is_a_clear_error(tiny_model: ReIDNet) -> None:
    groups = score_groups(tiny_model, L1Norm(), residual=False)
    with pytest.raises(MethodError, match="cannot reach"):
        kept_for_flops(groups, FlopModel.of(tiny_model, (64, 32)), 0.05 * count_flops(tiny_model, (64, 32)))


def test_soft_zeroing_then_removal_keeps_the_function(tiny_model: ReIDNet) -> None:
    x = torch.rand(3, 3, 64, 32)
    groups = score_groups(tiny_model, L1Norm(), residual=True)
    plan = select_channels(groups, kept_for_rate(groups, 0.5))
    zero_channels(tiny_model, build_graph(tiny_model), plan)
    with torch.no_grad():
        soft = tiny_model(x)
    pruned = copy.deepcopy(tiny_model)
    apply_plan(pruned, plan)
    assert count_flops(pruned, (64, 32)) < count_flops(tiny_model, (64, 32))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), soft, rtol=1e-5, atol=1e-6)


def test_graph_building_keeps_the_training_mode(tiny_model: ReIDNet) -> None:
    tiny_model.train()
    build_graph(tiny_model)
    assert tiny_model.training


def test_balanced_decay_shrinks_weak_grows_strong_and_keeps_the_energy() -> None:
    w = torch.randn(6, 3, 3, 3)
    before = w.clone()
    weak, strong = torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])
    for _ in range(100):
        balanced_decay_(w, weak, strong, 0.02)
    norms, norms0 = w.flatten(1).norm(dim=1), before.flatten(1).norm(dim=1)
    assert torch.allclose(norms[weak], norms0[weak] * 0.98**100)
    assert (norms[strong] > norms0[strong]).all()
    assert w.pow(2).sum().item() == pytest.approx(before.pow(2).sum().item(), rel=0.02)


def test_psfp_schedule() -> None:
    s = exponential_schedule(5.5)
    assert s(0, 40) == 0.0 and s(40, 40) == pytest.approx(1.0)
    assert s(10, 40) == pytest.approx(0.75, abs=0.01)
    assert all(s(t, 40) < s(t + 1, 40) for t in range(40))
