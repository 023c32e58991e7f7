"""Entropy of pooled activations: ``entropy``.

Luo & Wu, "An Entropy-based Pruning Method for CNN Compression", 2017. Each channel's activation map is
global-average-pooled over a set of calibration images; the pooled values are binned into a histogram
and the channel's score is its entropy. A channel whose response barely varies across images carries
little information (a constant one has entropy 0) and is pruned first.

The activation is the ReLU of each BatchNorm output, i.e. the feature map the next layer reads for a
block-internal channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from reidcompress.errors import MethodError
from reidcompress.prune.criteria._activations import record_bn_outputs
from reidcompress.prune.criteria._base import Criterion, combine_members, norm_out_members

__all__ = ["ActivationEntropy", "channel_entropy"]


def channel_entropy(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Entropy (nats) of each column of ``values`` (N, C), histogrammed into ``bins`` over its own range."""
    out = torch.zeros(values.shape[1], dtype=torch.float64)
    for c in range(values.shape[1]):
        v = values[:, c].double()
        lo, hi = float(v.min()), float(v.max())
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            continue  # a constant channel: one bin holds everything, entropy 0
        p = torch.histc(v, bins=bins, min=lo, max=hi) / v.numel()
        p = p[p > 0]
        out[c] = -(p * p.log()).sum()
    return out


class ActivationEntropy(Criterion):
    """Score = entropy of each channel's global-average-pooled activation over calibration images.

    Args:
        bins: histogram bins per channel.
    """

    name = "entropy"
    needs_data = True

    def __init__(self, bins: int = 100) -> None:
        self.bins = bins
        self._stats: dict[nn.Module, torch.Tensor] = {}

    @torch.no_grad()
    def calibrate(self, model: nn.Module, batches: Iterable[Any], *, device: torch.device | str = "cpu") -> None:
        pooled: dict[nn.Module, list[torch.Tensor]] = {}
        with record_bn_outputs(model) as acts:
            for batch in batches:
                acts.clear()
                model(batch[0].to(device))
                for m, a in acts.items():
                    pooled.setdefault(m, []).append(a.relu().mean(dim=(2, 3)).cpu())
        if not pooled:
            raise MethodError("entropy: the calibration data gave no batch")
        self._stats = {m: channel_entropy(torch.cat(v), self.bins) for m, v in pooled.items()}

    def __call__(self, group: tp.Group) -> torch.Tensor:
        members = norm_out_members(group)
        if not members or any(bn not in self._stats for bn, _, _ in members):
            raise MethodError("entropy: call calibrate() on the unpruned model before scoring")
        return combine_members([(self._stats[bn][idxs], root) for bn, idxs, root in members], len(group[0].idxs))
