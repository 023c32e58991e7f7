"""The reconstruction methods' math on hand-made layers, and the layer-by-layer strategy on the tiny net."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.data.datasets import load_dataset
from reidcompress.models.reid import ReIDNet
from reidcompress.prune import PruneData, PruneOptions, prune_model
from reidcompress.prune.criteria import ChannelPruning, ThiNet
from reidcompress.prune.criteria._reconstruction import (
    LayerStats,
    contribution_gram,
    gather_outputs,
    gather_patches,
    least_squares,
    sample_positions,
)
from reidcompress.prune.criteria.channel_pruning import lasso_path
from reidcompress.prune.criteria.redundancy import NEVER_MERGED, merge_distances
from reidcompress.prune.criteria.thinet import greedy_removal, rescale
from reidcompress.prune.strategies import reconstruction


def _stats(x: torch.Tensor, conv: nn.Conv2d, per_image: int = 64) -> LayerStats:
    """Moments of ``conv``'s input patches and outputs on ``x`` at sampled positions."""
    with torch.no_grad():
        y = conv(x)
    pos = sample_positions(x.shape[0], y.shape[2], y.shape[3], per_image, torch.Generator().manual_seed(0))
    stats = LayerStats(conv.weight[0].numel(), conv.out_channels, "cpu")
    stats.add(gather_patches(x, conv, pos), gather_outputs(y, pos))
    return stats


def _refit(conv: nn.Conv2d, keep: torch.Tensor, weight: torch.Tensor) -> nn.Conv2d:
    new = copy.deepcopy(conv)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, keep] = weight.float()
    return new


@pytest.mark.parametrize("kernel", [1, 3])
def test_patches_are_what_the_conv_reads(kernel: int) -> None:
    conv = nn.Conv2d(4, 5, kernel, stride=2, padding=kernel // 2, bias=False)
    x = torch.randn(2, 4, 9, 7)
    y = conv(x).detach()
    pos = sample_positions(2, y.shape[2], y.shape[3], 6, torch.Generator().manual_seed(1))
    patches = gather_patches(x, conv, pos)
    torch.testing.assert_close(patches @ conv.weight.detach().flatten(1).T, gather_outputs(y, pos))


@pytest.mark.parametrize("kernel", [1, 3])
def test_least_squares_recovers_the_output_when_removed_channels_are_combinations_or_zero(kernel: int) -> None:
    x = torch.rand(6, 5, 8, 6)
    x[:, 3] = 0.5 * x[:, 0] + 2.0 * x[:, 1]  # a linear combination of kept channels
    x[:, 4] = 0.0  # a dead channel
    conv = nn.Conv2d(5, 7, kernel, padding=kernel // 2, bias=False)
    keep = torch.tensor([0, 1, 2])
    weight, intercept = least_squares(_stats(x, conv), conv.weight, keep, ridge=0.0)
    with torch.no_grad():
        got = _refit(conv, keep, weight)(x) + intercept.float().view(1, -1, 1, 1)
        torch.testing.assert_close(got, conv(x), rtol=1e-4, atol=1e-4)
        # Plain removal of the same channels loses channel 3's contribution.
        assert (_refit(conv, keep, conv.weight[:, keep])(x) - conv(x)).abs().max() > 0.1


def test_the_intercept_restores_a_constant_channels_mean_contribution() -> None:
    x = torch.rand(4, 3, 6, 6)
    x[:, 2] = 0.7  # constant: its contribution is a per-output offset, which the intercept (the BN mean) takes
    conv = nn.Conv2d(3, 4, 1, bias=False)
    keep = torch.tensor([0, 1])
    weight, intercept = least_squares(_stats(x, conv), conv.weight, keep, ridge=0.0)
    torch.testing.assert_close(weight.float(), conv.weight.detach()[:, keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(intercept.float(), 0.7 * conv.weight.detach()[:, 2, 0, 0], rtol=1e-5, atol=1e-5)


def _redundant_layer() -> tuple[torch.Tensor, nn.Conv2d]:
    """A 1x1 layer whose channel 3 carries channels 0 + 1 (same weights), channel 2 independent and strong."""
    x = torch.rand(8, 4, 6, 6)
    x[:, 3] = x[:, 0] + x[:, 1]
    conv = nn.Conv2d(4, 6, 1, bias=False)
    with torch.no_grad():
        conv.weight[:, 1] = conv.weight[:, 0]
        conv.weight[:, 3] = conv.weight[:, 0]
        conv.weight[:, 2] *= 3
    return x, conv


@pytest.mark.parametrize("criterion", [ThiNet(), ChannelPruning()], ids=["thinet", "channel_pruning"])
def test_selection_keeps_the_channel_that_carries_two_others_and_reconstructs_exactly(criterion) -> None:
    x, conv = _redundant_layer()
    stats = _stats(x, conv)
    gram, r, yy = contribution_gram(stats, conv.weight)
    keep = criterion.select(gram, r, yy, 2)
    assert keep.tolist() == [2, 3]
    weight, intercept = criterion.reconstruct(stats, conv.weight, keep, gram, r)
    with torch.no_grad():
        got = _refit(conv, keep, weight)(x) + intercept.float().view(1, -1, 1, 1)
        torch.testing.assert_close(got, conv(x), rtol=1e-3, atol=1e-3)


def test_thinet_greedy_removes_a_dead_channel_first_whatever_its_weights() -> None:
    x = torch.rand(4, 4, 6, 6)
    x[:, 1] = 0.0
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[:, 1] *= 100  # the largest filter by far: an L1 criterion would keep it
    gram, r, _ = contribution_gram(_stats(x, conv), conv.weight)
    assert greedy_removal(gram, r, 1) == [1]


def test_thinet_rescale_merges_a_proportional_channel_into_its_twin() -> None:
    x = torch.rand(4, 3, 5, 5)
    x[:, 2] = 2.0 * x[:, 0]
    conv = nn.Conv2d(3, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight[:, 2] = conv.weight[:, 0]
    gram, r, _ = contribution_gram(_stats(x, conv), conv.weight)
    scales = rescale(gram, r, torch.tensor([0, 1]), ridge=0.0)
    torch.testing.assert_close(scales, torch.tensor([3.0, 1.0], dtype=torch.float64))


def test_lasso_path_is_zero_at_lambda_max_and_least_squares_at_zero() -> None:
    a = torch.randn(20, 4, dtype=torch.float64)
    gram = a.T @ a
    r = a.T @ torch.randn(20, dtype=torch.float64)
    lam_max = 2 * r.abs().max()
    beta = lasso_path(gram, r, torch.stack([lam_max * 1.01, torch.tensor(0.0, dtype=torch.float64)]), 5000)
    assert beta[:, 0].abs().max() == 0
    torch.testing.assert_close(beta[:, 1], torch.linalg.solve(gram, r), rtol=1e-6, atol=1e-6)


def test_redundancy_keeps_one_filter_per_cluster() -> None:
    base = torch.randn(3, 8)
    # Filters 0, 1, 4 are one direction at different scales; 2, 5 another; 3 a third.
    w = torch.stack([base[0], 2 * base[0], base[1], base[2], 0.5 * base[0], 3 * base[1]]).view(6, 8, 1, 1)
    scores = merge_distances(w)
    keep = set(scores.argsort(descending=True)[:3].tolist())
    assert keep == {1, 3, 5}  # the largest of each cluster
    assert scores.max() == NEVER_MERGED and scores[[0, 4, 2]].max() < 1e-6


@pytest.fixture
def synth_data(synth_root: Path) -> PruneData:
    return PruneData(items=tuple(load_dataset(synth_root).train), p=4, k=2)


@pytest.mark.parametrize("residual", [False, True])
def test_surgery_after_reconstruction_leaves_the_function_unchanged(
    tiny_model: ReIDNet, synth_data: PruneData, monkeypatch: pytest.MonkeyPatch, residual: bool
) -> None:
    x = torch.rand(3, 3, 64, 32)
    seen = []

    def checked_apply(model: ReIDNet, plan: dict) -> None:
        with torch.no_grad():
            before = model.eval()(x)
            apply(model, plan)
            seen.append((before, model(x)))

    apply = reconstruction.apply_plan
    monkeypatch.setattr(reconstruction, "apply_plan", checked_apply)
    options = PruneOptions(rate=0.5, round_to=1, calib_batches=1, residual=residual)
    record = prune_model(tiny_model, "thinet", options, synth_data)
    assert record["flops_after"] < record["flops_before"]
    ((before, after),) = seen
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_reconstruction_keeps_the_embedding_closer_than_l1_at_equal_flops(
    tiny_model: ReIDNet, synth_data: PruneData
) -> None:
    x = torch.stack([synth_data.calibration_batches((64, 32), 1).__next__()[0][i] for i in range(4)])
    with torch.no_grad():
        ref = tiny_model(x)

    def similarity(method: str) -> float:
        model = copy.deepcopy(tiny_model)
        record = prune_model(model, method, PruneOptions(target_flops=0.5, round_to=1, calib_batches=2), synth_data)
        assert record["target_met"]
        with torch.no_grad():
            return float(F.cosine_similarity(model.eval()(x), ref).mean())

    l1 = similarity("hao_li")
    assert similarity("thinet") > l1 and similarity("channel_pruning") > l1
