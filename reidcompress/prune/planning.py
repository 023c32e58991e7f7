"""How many channels each group keeps: rate -> counts (local or global), rounding, FLOPs targets,
and per-group counts from accuracy costs (a sensitivity analysis) for a FLOPs target.

All of it works on scores computed beforehand (``engine.score_groups``) and on a FLOPs model of the
unpruned network, so searching a FLOPs target never touches the network; the caller verifies the
FLOPs of the real pruned network afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reidcompress.errors import MethodError
from reidcompress.prune.engine import ScoredGroup

__all__ = ["SCOPES", "MAX_RATE", "FlopModel", "round_kept", "kept_for_rate", "kept_for_flops", "kept_for_costs"]

SCOPES = ("local", "global")
Normalizer = Callable[[torch.Tensor], torch.Tensor]
Cost = Callable[[str, float], float]  # (group root, fraction of its channels removed) -> accuracy cost
MAX_RATE = 0.999


@dataclass(frozen=True)
class FlopModel:
    """FLOPs of a network, per conv, so that a plan's FLOPs can be computed without surgery.

    A convolution's FLOPs are proportional to its input channels times its output channels (kernel,
    stride and feature map size are untouched by channel pruning), so the estimate is exact.
    """

    total: int
    convs: Mapping[str, tuple[int, int, int]]  # name -> (flops, in_channels, out_channels)

    @classmethod
    @torch.no_grad()
    def of(cls, model: nn.Module, input_size: tuple[int, int]) -> FlopModel:
        was_training = model.training
        model.eval()
        ref = next(model.parameters())
        try:
            with FlopCounterMode(display=False) as counter:
                model(torch.zeros(1, 3, *input_size, device=ref.device, dtype=ref.dtype))
        finally:
            model.train(was_training)
        per_module = counter.get_flop_counts()
        prefix = type(model).__name__
        convs = {
            name: (int(sum(per_module.get(f"{prefix}.{name}", {}).values())), m.in_channels, m.out_channels)
            for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d)
        }
        return cls(int(counter.get_total_flops()), convs)

    def estimate(self, groups: Sequence[ScoredGroup], kept: Mapping[str, int]) -> int:
        """FLOPs after each group keeps ``kept[root]`` of its channels."""
        out_kept: dict[str, int] = {}
        in_kept: dict[str, int] = {}
        for g in groups:
            for c in g.out_convs:
                out_kept[c] = kept[g.root]
            for c in g.in_convs:
                in_kept[c] = kept[g.root]
        saved = 0.0
        for name, (flops, cin, cout) in self.convs.items():
            ratio = in_kept.get(name, cin) / cin * out_kept.get(name, cout) / cout
            saved += flops * (1.0 - ratio)
        return int(round(self.total - saved))


def round_kept(target: float, size: int, round_to: int) -> int:
    """Nearest multiple of ``round_to`` to ``target`` kept channels, within [round_to, size].

    A group never grows, keeps all its channels when the target does, and one of ``round_to`` or
    fewer channels cannot be pruned to a multiple, so it keeps its size.
    """
    if target >= size or size <= round_to:
        return size
    k = int(math.floor(target / round_to + 0.5)) * round_to
    return min(size, max(round_to, k))


def _local(groups: Sequence[ScoredGroup], rate: float, base: Mapping[str, int], round_to: int) -> dict[str, int]:
    return {g.root: round_kept(base.get(g.root, g.size) * (1.0 - rate), g.size, round_to) for g in groups}


def _global(
    groups: Sequence[ScoredGroup], rate: float, base: Mapping[str, int], round_to: int, normalize: Normalizer
) -> dict[str, int]:
    # The channels to remove now, counted against the base widths (the original network in iterative
    # pruning), are the lowest of all groups' normalised scores.
    to_prune = sum(g.size for g in groups) - sum(base.get(g.root, g.size) * (1.0 - rate) for g in groups)
    n = max(0, int(round(to_prune)))
    if n == 0:
        return {g.root: g.size for g in groups}
    scores = torch.cat([normalize(g.scores.double()) for g in groups])
    owner = torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)])
    lowest = owner[torch.argsort(scores, stable=True)[:n]]
    counts = torch.bincount(lowest, minlength=len(groups)).tolist()
    return {g.root: round_kept(g.size - c, g.size, round_to) for g, c in zip(groups, counts, strict=True)}


def kept_for_rate(
    groups: Sequence[ScoredGroup],
    rate: float,
    *,
    scope: str = "local",
    round_to: int = 1,
    normalize: Normalizer | None = None,
    base: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Channels each group keeps when ``rate`` of each group's channels is removed.

    Args:
        groups: scored groups of the network.
        rate: fraction removed, relative to ``base`` widths (default: the groups' current widths).
        scope: ``local`` removes ``rate`` of every group; ``global`` removes the same total number of
            channels where the normalised scores are lowest across all groups.
        round_to: kept counts are multiples of this.
        normalize: per-group score normalisation for the global ranking (the criterion's).
        base: reference width per group root.
    """
    if scope not in SCOPES:
        raise MethodError(f"scope must be one of {SCOPES}, got {scope!r}")
    base = base or {g.root: g.size for g in groups}
    if scope == "local":
        return _local(groups, rate, base, round_to)
    return _global(groups, rate, base, round_to, normalize or (lambda s: s / s.mean().clamp_min(1e-12)))


def kept_for_flops(
    groups: Sequence[ScoredGroup],
    flop_model: FlopModel,
    target: float,
    *,
    scope: str = "local",
    round_to: int = 1,
    normalize: Normalizer | None = None,
    base: Mapping[str, int] | None = None,
    tolerance: float = 0.02,
) -> dict[str, int]:
    """Channels each group keeps so that FLOPs land within ``tolerance`` of ``target`` (absolute FLOPs).

    Bisection on the rate (FLOPs never increase with it), then, when rounding makes the FLOPs jump over
    the tolerance band, single ``round_to`` steps are given back to groups until it is reached. The
    other arguments are those of :func:`kept_for_rate`.
    """

    def kept(rate: float) -> dict[str, int]:
        return kept_for_rate(groups, rate, scope=scope, round_to=round_to, normalize=normalize, base=base)

    def flops(k: Mapping[str, int]) -> int:
        return flop_model.estimate(groups, k)

    if flops(kept(0.0)) <= target * (1 + tolerance):
        return kept(0.0)
    lo, hi = 0.0, MAX_RATE
    floor = flops(kept(hi))
    if floor > target * (1 + tolerance):
        raise MethodError(
            f"cannot reach {target / flop_model.total:.3f} of the FLOPs with these options: at most "
            f"{1 - floor / flop_model.total:.3f} can be removed "
            "(try `residual`, a smaller `round_to` or the global `scope`)"
        )
    for _ in range(50):
        mid = (lo + hi) / 2
        if flops(kept(mid)) > target:
            lo = mid
        else:
            hi = mid
    best = min((kept(lo), kept(hi)), key=lambda k: abs(flops(k) - target))
    if abs(flops(best) - target) <= tolerance * target:
        return best
    return _give_back(groups, kept(hi), flops, target, tolerance, round_to)


def _give_back(
    groups: Sequence[ScoredGroup],
    kept: dict[str, int],
    flops: Callable[[Mapping[str, int]], int],
    target: float,
    tolerance: float,
    round_to: int,
) -> dict[str, int]:
    """From a plan under the target, restore one rounding step at a time, each time in the group
    whose step comes closest to the target without overshooting the tolerance band."""
    kept = dict(kept)
    while flops(kept) < target * (1 - tolerance):
        best: tuple[int, str] | None = None
        for g in groups:
            if kept[g.root] >= g.size:
                continue
            trial = {**kept, g.root: min(g.size, kept[g.root] + round_to)}
            f = flops(trial)
            if f <= target * (1 + tolerance) and (best is None or f > best[0]):
                best = (f, g.root)
        if best is None:
            break
        g_size = next(g.size for g in groups if g.root == best[1])
        kept[best[1]] = min(g_size, kept[best[1]] + round_to)
    return kept


def _step_down(kept: int, floor: int, round_to: int) -> int | None:
    """The next smaller multiple of ``round_to`` at or above ``floor``, or None when the group is done."""
    nxt = (kept - 1) // round_to * round_to
    return nxt if nxt >= max(floor, round_to) else None


def kept_for_costs(
    groups: Sequence[ScoredGroup],
    flop_model: FlopModel,
    target: float,
    cost: Cost,
    *,
    min_kept: Mapping[str, int],
    round_to: int = 1,
    tolerance: float = 0.02,
) -> dict[str, int]:
    """Per-group channel counts for absolute FLOPs ``target`` that give up the least accuracy.

    Greedy marginal allocation: from the whole network, repeatedly remove ``round_to`` channels from
    the group whose next step costs the least accuracy per FLOP saved, so layers that cost little per
    FLOP give more channels. ``cost(root, rate)`` must not decrease with the rate; ``min_kept`` bounds
    each group (the rates a sensitivity analysis measured). A step changes the FLOPs of its own convs
    only, so only the groups sharing a conv with the last one stepped are re-priced.

    Raises:
        MethodError: the target is below what ``min_kept`` allows.
    """
    kept = {g.root: g.size for g in groups}
    sizes = dict(kept)
    convs = {g.root: set(g.out_convs) | set(g.in_convs) for g in groups}
    neighbours = {r: [o for o in convs if convs[o] & convs[r]] for r in convs}
    flops = flop_model.estimate(groups, kept)
    steps: dict[str, tuple[float, int, int] | None] = {}

    def price(root: str) -> tuple[float, int, int] | None:
        nxt = _step_down(kept[root], min_kept[root], round_to)
        if nxt is None:
            return None
        saved = flops - flop_model.estimate(groups, {**kept, root: nxt})
        if saved <= 0:
            return None
        extra = max(0.0, cost(root, 1 - nxt / sizes[root]) - cost(root, 1 - kept[root] / sizes[root]))
        return extra / saved, -saved, nxt

    for root in kept:
        steps[root] = price(root)
    previous = dict(kept), flops
    while flops > target:
        options = [(s, r) for r, s in steps.items() if s is not None]
        if not options:
            reachable = flops / flop_model.total
            raise MethodError(
                f"cannot reach {target / flop_model.total:.3f} of the FLOPs within the analysed rates: at most "
                f"{1 - reachable:.3f} can be removed (analyse higher `rates`, or use a smaller `round_to`)"
            )
        (_, neg_saved, nxt), root = min(options)
        previous = dict(kept), flops
        kept[root] = nxt
        flops += neg_saved
        for r in neighbours[root]:
            steps[r] = price(r)
    if abs(previous[1] - target) < abs(flops - target) and previous[1] <= target * (1 + tolerance):
        return previous[0]
    return kept
