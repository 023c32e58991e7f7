"""Redundant filters: cluster a layer's filters by similarity, keep one per cluster: ``redundant_channels``.

Ayinde & Zurada, "Building Efficient ConvNets using Redundant Feature Pruning", arXiv 1802.07653, 2018
(journal version: Ayinde, Inanc & Zurada, "Redundant feature pruning for accelerated inference in deep
neural networks", Neural Networks 118, 2019), the survey's "Redundant Channels" (its reference [40]).
Filters that are nearly parallel compute nearly the same feature up to scale: the filters of each layer
are grouped by agglomerative clustering on their cosine distance, and each cluster keeps one filter.

Scores that fit the engine's "lowest go first" contract: average linkage merges the two closest
clusters at each step, and the merged cluster's weaker representative (smaller L2 norm; which member
stays is our choice) is scored with the cosine distance of that merge. Average linkage never merges at
a smaller distance than before, so keeping the k highest scores keeps exactly one representative of
each of the k clusters of the dendrogram cut, for every k; the scores are cosine distances, comparable
across layers, which global scope uses as they are. A residual-stream channel is written by several
convs (every block of its stage, the downsample) and is clustered on all its writers' filters at once.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from reidcompress.prune.criteria._base import Criterion, conv_out_members

__all__ = ["FilterRedundancy", "merge_distances", "channel_filters"]

# The score of a cluster's last representative: beyond any cosine distance (which lies in [0, 2]).
NEVER_MERGED = 3.0


def merge_distances(features: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of ``features`` (a filter), the average-linkage cosine distance at which it stopped
    representing its cluster; ``strength`` (default: the row norms) decides which member represents."""
    w = features.detach().flatten(1).double()
    norms = w.norm(dim=1)
    strength = norms if strength is None else strength
    unit = w / norms.clamp_min(1e-12)[:, None]
    n = w.shape[0]
    dist = (1 - unit @ unit.T).clamp_min(0)
    dist.fill_diagonal_(float("inf"))
    size = torch.ones(n, dtype=torch.float64)
    rep = list(range(n))  # the filter representing the cluster stored at each row
    scores = torch.full((n,), NEVER_MERGED, dtype=torch.float64)
    for _ in range(n - 1):
        i, j = divmod(int(dist.argmin()), n)
        keep, drop = (rep[i], rep[j]) if strength[rep[i]] >= strength[rep[j]] else (rep[j], rep[i])
        scores[drop] = dist[i, j]
        rep[i] = keep
        # Lance-Williams update for average linkage: the merged cluster's mean distance to every other one.
        merged = (size[i] * dist[i] + size[j] * dist[j]) / (size[i] + size[j])
        dist[i], dist[:, i] = merged, merged
        dist[i, i] = float("inf")
        dist[j], dist[:, j] = float("inf"), float("inf")
        size[i] += size[j]
    return scores


def channel_filters(group: tp.Group) -> tuple[torch.Tensor, torch.Tensor]:
    """One feature row per root channel: the filters of every conv writing it, each scaled to unit norm
    and concatenated (so each writer counts equally), and the channel's strength (its mean relative norm).

    A block-internal channel has one writer; a residual-stream channel is written by every block of its
    stage and the downsample, and is redundant only if it is in all of them.
    """
    size = len(group[0].idxs)
    rows, strength = [], torch.zeros(size, dtype=torch.float64)
    for conv, idxs, root in conv_out_members(group):
        w = conv.weight.detach()[idxs].flatten(1).double()
        norms = w.norm(dim=1)
        block = torch.zeros(size, w.shape[1], dtype=torch.float64)
        block[root] = w / norms.clamp_min(1e-12)[:, None]
        rows.append(block)
        strength[root] += norms / norms.mean().clamp_min(1e-12)
    return torch.cat(rows, dim=1), strength


class FilterRedundancy(Criterion):
    """Score = cosine distance at which a filter merges into a cluster represented by another."""

    name = "redundancy"

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        return merge_distances(*channel_filters(group)).float()

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores
