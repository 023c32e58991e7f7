"""Auto-balanced regularisation, then removal: ``auto_balanced``.

Ding, Ding, Han & Tang, "Auto-Balanced Filter Pruning for Efficient Convolutional Neural Networks",
AAAI 2018. Before removal the network is trained with an L2 penalty whose factor is positive on the
filters to be removed and negative on the others, scaled so that the penalties of each layer sum to
zero: the weak filters are driven toward zero while the strong ones grow to take over their
representational capacity. Per layer (our reading of the paper's auto-balancing):
``strength * (sum_weak |K|^2 - theta * sum_strong |K|^2)`` with ``theta = sum_weak |K|^2 / sum_strong |K|^2``
held constant within a step. The weak set is re-selected at the start of every epoch ("abreast": all
layers at once, each at its final rate); after training they are removed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp

from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.criteria._base import conv_out_members
from reidcompress.prune.engine import ScoredGroup, apply_plan, build_graph, select_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.oneshot import plan_kept, score_model
from reidcompress.prune.training import PruneData
from reidcompress.train.callbacks import Callback

__all__ = ["AutoBalanced", "run_regularised", "balanced_penalty"]


def balanced_penalty(weight: torch.Tensor, weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """Zero-valued penalty whose gradient shrinks the ``weak`` filters and grows the ``strong`` ones."""
    sq = weight.flatten(1).pow(2).sum(1)
    w, s = sq[weak].sum(), sq[strong].sum()
    theta = (w / s.clamp_min(1e-12)).detach()
    return w - theta * s


class AutoBalanced(Callback):
    """Training-engine callback adding the auto-balanced penalty; ``plan`` is the current weak set."""

    def __init__(self, criterion: Criterion, options: PruneOptions, data: PruneData | None, flops0: int) -> None:
        self.criterion, self.options, self.data, self.flops0 = criterion, options, data, flops0
        self.plan: dict[str, list[int]] = {}
        self.groups: list[ScoredGroup] = []
        self._terms: list[tuple[torch.nn.Conv2d, torch.Tensor, torch.Tensor]] = []

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

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        model = trainer.model
        self._terms = []
        for root, idxs in self.select(model).items():
            if not idxs:
                continue
            group = self._graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels, idxs)
            for conv, weak, _ in conv_out_members(group):
                mask = torch.ones(conv.out_channels, dtype=torch.bool)
                mask[weak] = False
                device = conv.weight.device
                self._terms.append((conv, torch.as_tensor(weak, device=device), mask.nonzero().flatten().to(device)))

    def extra_loss(self, trainer: Any, feats: torch.Tensor, logits: Any, pids: torch.Tensor) -> torch.Tensor | None:
        if not self._terms:
            return None
        return self.options.reg_strength * sum(balanced_penalty(c.weight, w, s) for c, w, s in self._terms)


def run_regularised(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None
) -> list[ScoredGroup]:
    """Train with the penalty for ``options.epochs`` epochs, remove the weak channels, fine-tune."""
    assert data is not None  # PruneOptions.check guarantees it
    callback = AutoBalanced(criterion, options, data, count_flops(model, model.config.input_size))
    data.fit(model, options.epochs, [callback])
    apply_plan(model, callback.select(model))
    if options.finetune_epochs:
        data.fit(model, options.finetune_epochs)
    return callback.groups
