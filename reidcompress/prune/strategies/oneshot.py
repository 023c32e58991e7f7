"""One-shot pruning: score every group once, choose the counts, remove the channels.

The strategy of Hao Li, Molchanov and Entropy in the survey's Table 1. ``iterative.run_steps`` runs it
once (one-shot) or in several increments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reidcompress.models.reid import ReIDNet
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.engine import ScoredGroup, apply_plan, score_groups, select_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.planning import MAX_RATE, FlopModel, kept_for_costs, kept_for_flops, kept_for_rate
from reidcompress.prune.training import PruneData

__all__ = ["plan_kept", "most_pruned", "score_model", "prune_step"]


def plan_kept(
    model: ReIDNet,
    groups: list[ScoredGroup],
    criterion: Criterion,
    options: PruneOptions,
    *,
    rate: float | None = None,
    flops: float | None = None,
    base: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Kept channels per group for a rate (relative to ``base`` widths) or absolute FLOPs.

    With a sensitivity profile, FLOPs targets are met with per-group rates from its accuracy costs.
    """
    if options.sensitivity is not None:
        assert flops is not None  # PruneOptions.check: --sensitivity needs a target
        return kept_for_costs(
            groups,
            FlopModel.of(model, model.config.input_size),
            flops,
            options.sensitivity.cost,
            min_kept=options.sensitivity.min_kept(groups, options.round_to),
            round_to=options.round_to,
            tolerance=options.tolerance,
        )
    rate_opts: dict[str, Any] = {
        "scope": options.scope,
        "round_to": options.round_to,
        "normalize": criterion.normalize,
        "base": base,
    }
    if flops is None:
        return kept_for_rate(groups, rate or 0.0, **rate_opts)
    flop_model = FlopModel.of(model, model.config.input_size)
    return kept_for_flops(groups, flop_model, flops, tolerance=options.tolerance, **rate_opts)


def most_pruned(groups: list[ScoredGroup], criterion: Criterion, options: PruneOptions) -> dict[str, int]:
    """The smallest network these options can plan: the floor of any FLOPs (or latency) target."""
    if options.sensitivity is not None:
        return options.sensitivity.min_kept(groups, options.round_to)
    return kept_for_rate(
        groups, MAX_RATE, scope=options.scope, round_to=options.round_to, normalize=criterion.normalize
    )


def score_model(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None
) -> list[ScoredGroup]:
    """Calibrate a data-driven criterion on the current network, then score all its groups."""
    if criterion.needs_data:
        assert data is not None  # PruneOptions.check guarantees it
        batches = data.calibration_batches(model.config.input_size, options.calib_batches)
        criterion.calibrate(model, batches, device=data.device)
    return score_groups(model, criterion, options.residual)


def prune_step(
    model: ReIDNet,
    criterion: Criterion,
    options: PruneOptions,
    data: PruneData | None,
    *,
    rate: float | None = None,
    flops: float | None = None,
    base: Mapping[str, int] | None = None,
) -> list[ScoredGroup]:
    """Score, plan and remove in place; returns the scored groups (widths before this step)."""
    groups = score_model(model, criterion, options, data)
    kept = plan_kept(model, groups, criterion, options, rate=rate, flops=flops, base=base)
    apply_plan(model, select_channels(groups, kept))
    return groups
