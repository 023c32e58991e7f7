"""One-shot and iterative pruning: reach the target in K increments with fine-tuning after each.

With K = 1 this is one-shot pruning. With K > 1 each step prunes to the intermediate target
``(1 - rate) ** (k / K)`` of the original channels (rate mode) or ``target ** (k / K)`` of the original
FLOPs, so the K steps end exactly at the one-shot target; the survey lists Play-and-Prune and FPGM as
iterative. Fine-tuning runs in the training engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.engine import ScoredGroup
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.oneshot import prune_step
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData

__all__ = ["run_steps", "step_target"]


def step_target(options: PruneOptions, frac: float, flops0: int, base: Mapping[str, int] | None) -> dict[str, Any]:
    """``plan_kept``/``prune_step`` arguments for the fraction ``frac`` of the way to the final budget:
    ``(1 - rate) ** frac`` of the original channels kept, or ``target ** frac`` of the original FLOPs."""
    if options.rate is not None:
        return {"rate": 1 - (1 - options.rate) ** frac, "base": base}
    assert options.target_flops is not None
    return {"flops": flops0 * options.target_flops**frac}


def run_steps(model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None) -> StrategyResult:
    """Prune ``model`` in place in ``options.steps`` steps; returns the groups as first scored."""
    flops0 = count_flops(model, model.config.input_size)
    first: list[ScoredGroup] = []
    base: dict[str, int] | None = None
    for step in range(1, options.steps + 1):
        groups = prune_step(model, criterion, options, data, **step_target(options, step / options.steps, flops0, base))
        if not first:
            first, base = groups, {g.root: g.size for g in groups}
        if options.finetune_epochs and data is not None:
            data.fit(model, options.finetune_epochs)
    return StrategyResult.of(first)
