"""The pruning record: what a finished pruning did to a model, saved with the checkpoint as ``model.pruning``.

Both entry points write it (``prune.api`` for a rate or FLOPs target, ``prune.latency`` for a latency
target), so it lives below both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import Complexity, complexity, conv_widths
from reidcompress.prune.engine import ScoredGroup
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.registry import MethodSpec
from reidcompress.prune.strategies.result import StrategyResult

__all__ = ["pruning_record"]


def _group_rates(groups: Sequence[ScoredGroup], widths: dict[str, int]) -> dict[str, float]:
    return {g.root: round(1.0 - widths[g.root] / g.size, 6) for g in groups}


def pruning_record(
    model: ReIDNet, spec: MethodSpec, options: PruneOptions, result: StrategyResult, before: Complexity
) -> dict[str, Any]:
    """The record of a finished pruning of ``model`` (``before``: its complexity unpruned), stored as
    ``model.pruning`` (a previous record is kept under ``previous``)."""
    after = complexity(model, before.input_size)
    widths = conv_widths(model)
    record: dict[str, Any] = {
        "method": spec.name,
        "paper": spec.paper,
        "strategy": spec.strategy,
        "rate": options.rate,
        "target_flops": options.target_flops,
        "scope": options.scope,
        "round_to": options.round_to,
        "residual": options.residual,
        "steps": options.steps,
        "epochs": options.epochs,
        "finetune_epochs": options.finetune_epochs,
        "flops_before": before.flops,
        "flops_after": after.flops,
        "flops_ratio": after.flops / before.flops,
        "params_before": before.params,
        "params_after": after.params,
        "embedding_dim": model.embedding_dim,
        "input_size": list(model.config.input_size),
        "conv_widths": widths,
        "group_rates": _group_rates(result.groups, widths),
    }
    if options.target_flops is not None:
        ratio = after.flops / before.flops
        record["target_met"] = abs(ratio - options.target_flops) <= options.tolerance * options.target_flops
    record.update(result.record)
    if options.sensitivity is not None:
        record["sensitivity"] = options.sensitivity.describe()
    if model.pruning:
        record["previous"] = model.pruning
    model.pruning = record
    return record
