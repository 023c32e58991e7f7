"""Filter L2 norm, the criterion of soft filter pruning (``psfp``).

He, Dong, Kang, Fu & Yang, "Progressive Deep Neural Networks Acceleration via Soft Filter Pruning",
2018 (and He et al., "Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks",
IJCAI 2018): each epoch the filters with the smallest L2 norm are set to zero.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from reidcompress.prune.criteria._base import Criterion, combine_members, conv_out_members

__all__ = ["L2Norm"]


class L2Norm(Criterion):
    """Score = euclidean norm of each filter of the conv(s) whose outputs the group removes."""

    name = "l2"

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        per_member = [(conv.weight[idxs].flatten(1).norm(dim=1), root) for conv, idxs, root in conv_out_members(group)]
        return combine_members(per_member, len(group[0].idxs))
