"""Soft filter pruning: zero the weakest filters after every epoch, let them recover, remove at the end.

``progressive`` is PSFP (He, Dong, Kang, Fu & Yang, "Progressive Deep Neural Networks Acceleration via
Soft Filter Pruning", 2018; the survey's Algorithm 1): the rate zeroed after epoch t grows toward the
target as ``P * (1 - exp(-D t / T)) / (1 - exp(-D))``, reaching it at the last epoch T. The default decay
D = 5.5 zeroes three quarters of the final rate after a quarter of the epochs, the asymptotic schedule of
He et al.'s ASFP (IEEE T-Cybernetics 2019). ``soft`` zeroes at the final rate from the first epoch,
as FPGM does during training (He et al., CVPR 2019; the survey's Algorithm 2).

Zeroed filters keep receiving gradients (that is what makes the pruning soft). Their BN scale and
shift are zeroed too, so a zeroed channel outputs exactly 0 and the final hard removal does not change
the trained network's function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.engine import ScoredGroup, apply_plan, build_graph, select_channels, zero_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.oneshot import plan_kept, score_model
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData
from reidcompress.train.callbacks import Callback

__all__ = ["Schedule", "constant_schedule", "exponential_schedule", "SoftPruning", "run_soft", "run_progressive"]

Schedule = Callable[[int, int], float]  # (epochs done, total epochs) -> fraction of the final amount


def constant_schedule(epoch: int, total: int) -> float:
    return 1.0


def exponential_schedule(decay: float) -> Schedule:
    """PSFP's schedule: 0 before training, 1 after the last epoch, rising fastest at first."""

    def schedule(epoch: int, total: int) -> float:
        return (1 - math.exp(-decay * epoch / total)) / (1 - math.exp(-decay))

    return schedule


class SoftPruning(Callback):
    """Training-engine callback: after each epoch, zero the channels the criterion ranks lowest.

    ``plan`` holds the last zeroed channels (root conv -> indices), ``groups`` the first scoring.
    """

    def __init__(
        self, criterion: Criterion, options: PruneOptions, data: PruneData | None, schedule: Schedule, flops0: int
    ) -> None:
        self.criterion, self.options, self.data = criterion, options, data
        self.schedule, self.flops0 = schedule, flops0
        self.plan: dict[str, list[int]] = {}
        self.groups: list[ScoredGroup] = []

    def on_train_start(self, trainer: Any) -> None:
        self._graph = build_graph(trainer.model)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
        model, opts = trainer.model, self.options
        s = self.schedule(epoch + 1, trainer.config.epochs)
        groups = score_model(model, self.criterion, opts, self.data)
        if opts.rate is not None:
            kept = plan_kept(model, groups, self.criterion, opts, rate=opts.rate * s)
        else:
            assert opts.target_flops is not None
            kept = plan_kept(model, groups, self.criterion, opts, flops=self.flops0 * (1 - (1 - opts.target_flops) * s))
        self.plan = select_channels(groups, kept)
        zero_channels(model, self._graph, self.plan)
        self.groups = self.groups or groups
        logs["soft_pruned_channels"] = sum(map(len, self.plan.values()))


def run_soft(
    model: ReIDNet,
    criterion: Criterion,
    options: PruneOptions,
    data: PruneData | None,
    schedule: Schedule = constant_schedule,
) -> StrategyResult:
    """Train ``options.epochs`` epochs with soft pruning, then remove the zeroed channels for good."""
    assert data is not None  # PruneOptions.check guarantees it
    callback = SoftPruning(criterion, options, data, schedule, count_flops(model, model.config.input_size))
    data.fit(model, options.epochs, [callback])
    apply_plan(model, callback.plan)
    if options.finetune_epochs:
        data.fit(model, options.finetune_epochs)
    return StrategyResult.of(callback.groups)


def run_progressive(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None
) -> StrategyResult:
    return run_soft(model, criterion, options, data, exponential_schedule(options.decay))
