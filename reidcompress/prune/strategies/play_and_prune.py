"""Play and Prune: regularised filter pruning paced by the accuracy controller: ``play_and_prune``.

Singh, Verma, Rai & Namboodiri, "Play and Prune: Adaptive Filter Pruning for Deep Model Compression",
IJCAI 2019. A min-max game between the Adaptive Filter Pruning module, which drives the unimportant
filters (lowest L1 norm) to zero with a sparsity penalty while training, and the Pruning Rate
Controller, which sets that penalty's strength from the accuracy left above the tolerated drop; the
filters that give in are pruned, and the game goes on, alternating pruning and training.

Each trial of ``strategies.adaptive.run_controlled`` (the PRC, which also keeps the budget) is here:

1. the candidates: the channels that a *global* ranking of filter L1 norms would remove to reach the
   trial's target, so the split across layers is not fixed in advance;
2. one epoch of training in which those channels' filters and BN scales/shifts are shrunk after every
   step (a decoupled penalty, as ``auto_balanced`` applies its own), down to ``--weak-scale`` ** s of
   their size by the end of the epoch, with s the PRC's strength: 1 with the whole tolerance unspent,
   0 (no push, plain recovery) at the accuracy floor;
3. a new global ranking on the trained weights removes the channels to the trial's target: filters the
   loss defended against the push stay and their layer gives up others instead. So how many filters
   each layer gives up comes out of training under the accuracy constraint, not out of a fixed rate.

The ranking is always global (``--scope`` does not apply); the budget lands as in ``afp``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from reidcompress.models.reid import ReIDNet
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.engine import ScoredGroup, build_graph, select_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.adaptive import run_controlled
from reidcompress.prune.strategies.oneshot import plan_kept, prune_step, score_model
from reidcompress.prune.strategies.regularised import channel_params
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData
from reidcompress.train.callbacks import Callback

__all__ = ["Shrink", "run_play_and_prune"]


class Shrink(Callback):
    """Training-engine callback: after each optimiser step, scale the planned channels' parameters down
    so that they reach ``final_scale`` of their size after the last step."""

    def __init__(self, plan: dict[str, list[int]], final_scale: float) -> None:
        self.plan, self.final_scale = plan, final_scale
        self._params: list[tuple[torch.Tensor, list[int]]] = []
        self._factor = 1.0

    def on_train_start(self, trainer: Any) -> None:
        self._params = channel_params(trainer.model, build_graph(trainer.model), self.plan)
        steps = max(1, len(trainer.loader) * trainer.config.epochs)
        self._factor = self.final_scale ** (1.0 / steps)

    @torch.no_grad()
    def on_batch_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        for param, idxs in self._params:
            param[idxs] *= self._factor


def _play_step(
    model: ReIDNet,
    criterion: Criterion,
    options: PruneOptions,
    train: PruneData,
    target: dict[str, Any],
    strength: float,
) -> list[ScoredGroup]:
    opts = dataclasses.replace(options, scope="global")
    groups = score_model(model, criterion, opts, None)
    weak = select_channels(groups, plan_kept(model, groups, criterion, opts, **target))
    train.fit(model, 1, [Shrink(weak, options.weak_scale**strength)])
    prune_step(model, criterion, opts, None, **target)
    return groups


def run_play_and_prune(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None
) -> StrategyResult:
    return run_controlled(model, criterion, options, data, _play_step)
