"""Auto-balanced regularisation, then removal: ``auto_balanced``.

Ding, Ding, Han & Tang, "Auto-Balanced Filter Pruning for Efficient Convolutional Neural Networks",
AAAI 2018. Before removal the network is trained with an L2 penalty whose factor is positive on the
filters to be removed and negative on the others, scaled so that each layer's penalties sum to zero:
the weak filters are driven toward zero while the strong ones grow to take over their representational
capacity. The weak set is re-selected at the start of every epoch ("abreast": all layers at once,
each at its final rate); after training it is removed.

Our implementation (the paper's idea, adapted to Adam and BatchNorm):

- The penalty is applied as a decoupled step after each optimiser step, as SGD applies an L2 penalty:
  ``weak *= 1 - eta`` and ``strong *= 1 + eta * theta`` with ``theta = |weak|^2 / |strong|^2`` of that
  layer, which keeps the layer's total squared norm (the auto-balance). Through Adam an L2 gradient
  would be rescaled per weight and could not silence anything in a short run. ``eta`` is set so that
  the weak channels reach ``weak_scale`` of their magnitude by the last regularised step.
- A kernel followed by a BatchNorm has its scale normalised away, so shrinking it alone never silences
  the channel: the same balanced decay also applies to the channel's BN scale and shift.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp

from reidcompress.errors import MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune._pruners import affine_params
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.criteria._base import conv_out_members, norm_out_members
from reidcompress.prune.engine import ScoredGroup, apply_plan, build_graph, select_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.oneshot import plan_kept, score_model
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData
from reidcompress.train.callbacks import Callback

__all__ = ["AutoBalanced", "run_regularised", "balanced_decay_", "channel_params"]

Term = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def balanced_decay_(param: torch.Tensor, weak: torch.Tensor, strong: torch.Tensor, eta: float) -> None:
    """Shrink the ``weak`` rows of ``param`` by ``eta`` and grow the ``strong`` ones so that the total
    squared norm is unchanged to first order (the balanced L2 step)."""
    sq = param.reshape(param.shape[0], -1).pow(2).sum(1)
    theta = sq[weak].sum() / sq[strong].sum().clamp_min(1e-12)
    param[weak] *= 1 - eta
    param[strong] *= 1 + eta * theta


def channel_params(
    model: ReIDNet, graph: tp.DependencyGraph, plan: dict[str, list[int]]
) -> list[tuple[torch.Tensor, list[int]]]:
    """The filters and BN scales and shifts of the planned channels, each with those channels' indices.

    A kernel followed by a BatchNorm has its scale normalised away: silencing a channel takes its BN
    affine parameters too.
    """
    params = []
    for root, idxs in plan.items():
        if not idxs:
            continue
        group = graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels, idxs)
        params += [(conv.weight, idx) for conv, idx, _ in conv_out_members(group)]
        params += [pair for norm, idx, _ in norm_out_members(group) for pair in affine_params(norm, idx)]
    return params


def _split(param: torch.Tensor, weak: list[int]) -> Term:
    mask = torch.ones(param.shape[0], dtype=torch.bool)
    mask[weak] = False
    device = param.device
    return param, torch.as_tensor(weak, device=device), mask.nonzero().flatten().to(device)


class AutoBalanced(Callback):
    """Training-engine callback applying the balanced decay; ``plan`` is the current weak set."""

    def __init__(self, criterion: Criterion, options: PruneOptions, data: PruneData | None, flops0: int) -> None:
        self.criterion, self.options, self.data, self.flops0 = criterion, options, data, flops0
        self.plan: dict[str, list[int]] = {}
        self.groups: list[ScoredGroup] = []
        self._terms: list[Term] = []
        self._eta = 0.0

    def select(self, model: ReIDNet) -> dict[str, list[int]]:
        """Choose the weak channels at the final target with the current weights."""
        opts = self.options
        groups = score_model(model, self.criterion, opts, self.data)
        flops = None if opts.target_flops is None else self.flops0 * opts.target_flops
        self.plan = select_channels(groups, plan_kept(model, groups, self.criterion, opts, rate=opts.rate, flops=flops))
        self.groups = self.groups or groups
        return self.plan

    def on_train_start(self, trainer: Any) -> None:
        self._graph = build_graph(trainer.model)
        steps = len(trainer.loader) * trainer.config.epochs
        if steps < 1:
            raise MethodError("auto_balanced: the training loader has no batch")
        self._eta = 1.0 - self.options.weak_scale ** (1.0 / steps)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        model = trainer.model
        self._terms = [_split(param, weak) for param, weak in channel_params(model, self._graph, self.select(model))]

    def on_batch_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        for param, weak, strong in self._terms:
            balanced_decay_(param, weak, strong, self._eta)


def run_regularised(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None
) -> StrategyResult:
    """Train with the balanced decay for ``options.epochs`` epochs, remove the weak channels, fine-tune."""
    assert data is not None  # PruneOptions.check guarantees it
    callback = AutoBalanced(criterion, options, data, count_flops(model, model.config.input_size))
    data.fit(model, options.epochs, [callback])
    apply_plan(model, callback.select(model))
    if options.finetune_epochs:
        data.fit(model, options.finetune_epochs)
    return StrategyResult.of(callback.groups)
