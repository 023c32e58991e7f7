"""Filter Pruning via Geometric Median: ``fpgm``.

He, Liu, Wang, Hu & Yang, "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
Acceleration", CVPR 2019. The filters closest to the geometric median of their layer are the most
replaceable by the others; the paper approximates "closest to the median" by the smallest sum of
euclidean distances to all other filters of the layer, measured on the raw weights (torch-pruning's
``FPGMImportance`` measures on |W|^p instead, which is not the paper's criterion).
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from reidcompress.prune.criteria._base import Criterion, combine_members, conv_out_members

__all__ = ["GeometricMedian"]


def distance_sums(weight: torch.Tensor) -> torch.Tensor:
    """For each filter (row of ``weight``), the sum of its euclidean distances to every other filter."""
    w = weight.flatten(1).double()
    return torch.cdist(w, w).sum(dim=1)


class GeometricMedian(Criterion):
    """Score = sum of distances to the layer's other filters; the smallest lie nearest the median."""

    name = "fpgm"

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        # Distances are taken over the whole layer (all filters), then restricted to the group's indices.
        per_member = [(distance_sums(conv.weight)[idxs], root) for conv, idxs, root in conv_out_members(group)]
        return combine_members(per_member, len(group[0].idxs))
