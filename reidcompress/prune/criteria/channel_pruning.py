"""Channel Pruning: LASSO channel selection, least-squares reconstruction of the next layer: ``channel_pruning``.

He, Zhang & Sun, "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017. The next
layer's output is approximated by ``sum_c beta_c z_c`` (``z_c``: channel c's contribution); a LASSO
penalty ``lambda |beta|_1`` is raised until only the wanted number of channels has a non-zero
coefficient (their eq. 3), then the kept channels' weights are refitted by linear least squares to the
original output (eq. 4 with beta fixed), with the pruned network's inputs, as in their multi-layer case.

Our solver: FISTA on the Gram form (``_reconstruction.contribution_gram``), for a whole log-spaced grid
of lambdas at once (one (C, lambdas) matrix, batched), from the lambda at which every coefficient is zero
down to 1e-4 of it. The selection is at the largest lambda with at least the wanted number of non-zero
coefficients, keeping the largest |beta| if a step of the grid activates several at once.
"""

from __future__ import annotations

import torch

from reidcompress.prune.criteria._reconstruction import LayerStats, ReconstructionCriterion, least_squares

__all__ = ["ChannelPruning", "lasso_path"]

LAMBDAS = 48
ITERATIONS = 500


def lasso_path(
    gram: torch.Tensor, r: torch.Tensor, lambdas: torch.Tensor, iterations: int = ITERATIONS
) -> torch.Tensor:
    """beta (C, L) minimising ``beta^T G beta - 2 r^T beta + lambda_l |beta|_1`` for every lambda (FISTA)."""
    lipschitz = 2 * torch.linalg.eigvalsh(gram)[-1].clamp_min(1e-12)
    step = 1.0 / lipschitz
    beta = torch.zeros(gram.shape[0], len(lambdas), dtype=gram.dtype, device=gram.device)
    z, t = beta, 1.0
    thresh = (step * lambdas)[None, :]
    for _ in range(iterations):
        v = z - step * 2 * (gram @ z - r[:, None])
        nxt = v.sign() * (v.abs() - thresh).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = nxt + ((t - 1) / t_next) * (nxt - beta)
        beta, t = nxt, t_next
    return beta


class ChannelPruning(ReconstructionCriterion):
    """LASSO channel selection, least-squares reconstruction of the kept channels' weights."""

    name = "channel_pruning"

    def select(self, gram: torch.Tensor, r: torch.Tensor, yy: torch.Tensor, n_keep: int) -> torch.Tensor:
        scale = yy.clamp_min(1e-12)
        g, rr = gram / scale, r / scale
        lam_max = 2 * rr.abs().max().clamp_min(1e-12)
        lambdas = lam_max * torch.logspace(0, -4, LAMBDAS, dtype=g.dtype, device=g.device)
        beta = lasso_path(g, rr, lambdas).abs()
        active = (beta > 1e-9).sum(0)
        enough = (active >= n_keep).nonzero()
        col = int(enough[0]) if len(enough) else LAMBDAS - 1
        return beta[:, col].topk(n_keep).indices.sort().values.cpu()

    def reconstruct(
        self, stats: LayerStats, weight: torch.Tensor, keep: torch.Tensor, gram: torch.Tensor, r: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return least_squares(stats, weight, keep)
