"""Criteria scores on hand-made weights and activations."""

from __future__ import annotations

import math

import pytest
import torch
import torch_pruning as tp
from torch import nn

from reidcompress.prune.criteria import ActivationEntropy, GeometricMedian, L1Norm, L2Norm, TaylorActivation
from reidcompress.prune.criteria.entropy import channel_entropy


def _net(out_channels: int = 5) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, 2, 1, bias=False),
    ).eval()


def _group(net: nn.Sequential) -> tp.Group:
    graph = tp.DependencyGraph().build_dependency(net, torch.zeros(1, 1, 4, 4), verbose=False)
    n = net[0].out_channels
    return graph.get_pruning_group(net[0], tp.prune_conv_out_channels, list(range(n)))


def _set_filters(net: nn.Sequential, values: list[float]) -> None:
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(values).view(-1, 1, 1, 1))


def test_l1_and_l2_rank_a_zero_filter_lowest() -> None:
    net = _net(4)
    _set_filters(net, [0.5, -2.0, 0.0, 1.0])
    group = _group(net)
    assert torch.allclose(L1Norm()(group), torch.tensor([0.5, 2.0, 0.0, 1.0]))
    assert L2Norm()(group).argmin().item() == 2


def test_fpgm_ranks_the_filter_at_the_geometric_median_lowest() -> None:
    net = _net(5)
    _set_filters(net, [0.0, 1.0, 2.0, 3.0, 10.0])
    scores = GeometricMedian()(_group(net))
    # Sums of distances to the others: 16, 13, 12, 13, 34; the median filter (2.0) goes first,
    # while the zero filter, the one L1 would drop, is kept over it.
    assert torch.allclose(scores, torch.tensor([16.0, 13.0, 12.0, 13.0, 34.0]))
    assert scores.argmin().item() == 2


def test_fpgm_uses_raw_weights_not_magnitudes() -> None:
    net = _net(3)
    _set_filters(net, [-1.0, 1.0, 0.9])
    # On |W| the filters -1 and 1 coincide; on the raw weights -1 is the outlier.
    assert GeometricMedian()(_group(net)).argmax().item() == 0


def test_channel_entropy() -> None:
    values = torch.stack([torch.full((8,), 3.0), torch.tensor([0.0, 1.0] * 4), torch.arange(8.0)], dim=1)
    h = channel_entropy(values, bins=8)
    assert h[0].item() == 0.0
    assert h[1].item() == pytest.approx(math.log(2))
    assert h[2].item() == pytest.approx(math.log(8))


def test_entropy_criterion_scores_a_constant_channel_zero() -> None:
    net = _net(3)
    _set_filters(net, [1.0, 0.0, -1.0])  # channel 1 sees no input: BN output constant
    with torch.no_grad():
        net[1].bias.fill_(0.5)
    batches = [(torch.randn(6, 1, 4, 4),) for _ in range(2)]
    crit = ActivationEntropy(bins=10)
    crit.calibrate(net, batches)
    scores = crit(_group(net))
    assert scores[1].item() == 0.0 and scores[0] > 0 and scores[2] > 0


def test_taylor_is_mean_abs_activation_times_gradient() -> None:
    net = _net(3)
    _set_filters(net, [1.0, 2.0, -1.0])
    with torch.no_grad():
        net[3].weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, -1.0]]).view(2, 3, 1, 1))

    def loss_fn(model: nn.Module, x: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        return model(x).pow(2).sum()

    x = torch.randn(4, 1, 3, 3)
    crit = TaylorActivation(loss_fn)
    crit.calibrate(net, [(x, torch.zeros(4))])
    scores = crit(_group(net))

    a = net[1](net[0](x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net[3](net[2](a)).pow(2).sum(), a)
    expected = (a * g).mean(dim=(2, 3)).abs().mean(0)
    assert torch.allclose(scores, expected.float(), atol=1e-6)
    assert scores[1].item() == 0.0  # the next layer ignores channel 1: removing it costs nothing
    assert crit.normalize(scores).norm().item() == pytest.approx(1.0)


def test_data_driven_criteria_refuse_to_score_uncalibrated() -> None:
    from reidcompress.errors import MethodError

    group = _group(_net(3))
    with pytest.raises(MethodError):
        ActivationEntropy()(group)
    with pytest.raises(MethodError):
        TaylorActivation(lambda m, x, p: x.sum())(group)
