"""ThiNet: greedy channel selection on the next layer's output, then least-squares rescaling: ``thinet``.

Luo, Wu & Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression", ICCV 2017.
Whether a layer's channel can go is decided by the *next* layer: ThiNet removes, one at a time, the
channel whose removal increases the reconstruction error of the next layer's output least (its
Algorithm 1, greedy on the sum of the removed channels' contributions), then fits one scale per kept
channel by least squares so that the kept contributions best reproduce that output (its eq. 7).

Here the target is the original network's output and the contributions are computed on the network
pruned so far (the strategy goes layer by layer), so the greedy step minimises
``|Y - sum_{kept} z_c|^2`` in its Gram form (``_reconstruction.contribution_gram``): removing c after
the set T costs ``2 <E + sum_T z_t, z_c> + |z_c|^2`` with ``E`` the current error. On the unpruned
network ``E = 0`` and this is the paper's criterion exactly. The fit has an intercept, folded into the
next BatchNorm (see ``_reconstruction``).
"""

from __future__ import annotations

import torch

from reidcompress.prune.criteria._reconstruction import RIDGE, LayerStats, ReconstructionCriterion

__all__ = ["ThiNet", "greedy_removal", "rescale"]


def greedy_removal(gram: torch.Tensor, r: torch.Tensor, n_remove: int) -> list[int]:
    """The channels ThiNet's greedy search removes, in order (the first ``n`` are its choice for any n)."""
    cost = 2 * (r - gram.sum(1)) + gram.diagonal()
    removed = torch.zeros(gram.shape[0], dtype=torch.bool, device=gram.device)
    order = []
    for _ in range(n_remove):
        t = int(cost.masked_fill(removed, float("inf")).argmin())
        order.append(t)
        removed[t] = True
        cost = cost + 2 * gram[:, t]
    return order


def rescale(gram: torch.Tensor, r: torch.Tensor, keep: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """ThiNet's eq. 7: one least-squares scale per kept channel (ridge toward 1, the unscaled weights)."""
    a, b = gram[keep][:, keep], r[keep]
    alpha = ridge * a.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(len(keep), dtype=a.dtype, device=a.device)
    return torch.linalg.solve(a + alpha * eye, b + alpha)


class ThiNet(ReconstructionCriterion):
    """Greedy selection on the next layer's reconstruction error, least-squares channel scales."""

    name = "thinet"

    def select(self, gram: torch.Tensor, r: torch.Tensor, yy: torch.Tensor, n_keep: int) -> torch.Tensor:
        removed = set(greedy_removal(gram, r, gram.shape[0] - n_keep))
        return torch.tensor([c for c in range(gram.shape[0]) if c not in removed], dtype=torch.long)

    def reconstruct(
        self, stats: LayerStats, weight: torch.Tensor, keep: torch.Tensor, gram: torch.Tensor, r: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = keep.to(gram.device)
        scales = rescale(gram, r, keep)
        w = weight.detach().double().to(gram.device)[:, keep] * scales.view(1, -1, 1, 1)
        mx, my, *_ = stats.centred()
        mean_x = mx.view(weight.shape[1], -1)[keep]  # (|keep|, K)
        return w, my - torch.einsum("nck,ck->n", w.flatten(2), mean_x)
