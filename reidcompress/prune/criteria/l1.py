"""Filter L1 norm: ``hao_li``.

Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017: a filter's
importance is the sum of the absolute values of its kernel weights; the filters with the smallest sums
(and their feature maps) are removed.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from reidcompress.prune.criteria._base import Criterion, combine_members, conv_out_members

__all__ = ["L1Norm"]


class L1Norm(Criterion):
    """Score = sum of |w| over each filter of the conv(s) whose outputs the group removes."""

    name = "l1"

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        per_member = [(conv.weight[idxs].abs().flatten(1).sum(1), root) for conv, idxs, root in conv_out_members(group)]
        return combine_members(per_member, len(group[0].idxs))
