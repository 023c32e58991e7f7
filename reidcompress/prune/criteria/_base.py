"""What every criterion shares: the Criterion protocol and walking a dependency group's members.

A criterion scores one torch-pruning ``Group`` (a set of coupled channels): it returns one score per
root channel, lowest pruned first, like torch-pruning's ``Importance``. Data-driven criteria first
record statistics with ``calibrate`` on the unpruned model; every score is computed before any surgery.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from reidcompress.prune._pruners import NORM_HANDLERS

__all__ = ["Criterion", "Member", "conv_out_members", "norm_out_members", "combine_members"]

# (module, its channel indices, the matching root-channel indices); modules are convs or norm layers.
Member = tuple[Any, list[int], list[int]]


class Criterion:
    """Base class: ``__call__(group) -> Tensor`` of one score per root channel (low = prune first).

    ``normalize`` makes one group's scores comparable with another's for global ranking; the default
    divides by the group's mean, a criterion whose paper prescribes a layer normalisation overrides it.
    """

    name: str = ""
    needs_data: bool = False

    def calibrate(self, model: nn.Module, batches: Iterable[Any], *, device: torch.device | str = "cpu") -> None:
        """Record data statistics on the unpruned model (data-driven criteria only)."""

    def __call__(self, group: tp.Group) -> torch.Tensor:
        raise NotImplementedError

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.mean().clamp_min(1e-12)


def _members(group: tp.Group, handler: Any, types: tuple[type, ...]) -> Iterator[Member]:
    for i, (dep, idxs) in enumerate(group):
        if dep.handler == handler and isinstance(dep.target.module, types):
            yield dep.target.module, list(idxs), list(group[i].root_idxs)


def conv_out_members(group: tp.Group) -> list[Member]:
    """The convolutions whose output channels (filters) the group removes."""
    return list(_members(group, tp.prune_conv_out_channels, (nn.Conv2d,)))


def norm_out_members(group: tp.Group) -> list[Member]:
    """The normalisation layers (BatchNorm2d, InstanceNorm2d, IBN) whose channels the group removes
    (their outputs are the activations)."""
    return [
        (dep.target.module, list(idxs), list(group[i].root_idxs))
        for i, (dep, idxs) in enumerate(group)
        if dep.handler in NORM_HANDLERS
    ]


def combine_members(per_member: list[tuple[torch.Tensor, list[int]]], size: int) -> torch.Tensor:
    """One score per root channel from several members' scores.

    A block-internal group has a single member; a residual group has one per coupled conv (every
    block's last conv and the downsample). Each member is scaled by its own mean before averaging so
    that no layer dominates merely by its weight scale or fan-in.
    """
    if not per_member:
        raise ValueError("the group has no member this criterion can score")
    total = torch.zeros(size, dtype=torch.float64)
    for scores, root_idxs in per_member:
        s = scores.detach().double().cpu()
        if len(per_member) > 1:
            s = s / s.mean().clamp_min(1e-12)
        total.index_add_(0, torch.as_tensor(root_idxs), s)
    return (total / len(per_member)).float()
