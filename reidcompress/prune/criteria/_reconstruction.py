"""What the reconstruction methods share: next-layer statistics, their Gram form and the least-squares solves.

A pruned channel group feeds a *consumer*, the next convolution ``Y = W * X`` (N outputs, C inputs,
K = kh * kw taps). On M output positions sampled from calibration images, with ``X`` the (M, C*K) input
patches of the network being pruned and ``Y`` the (M, N) outputs of the *original* network, channel c
contributes ``z_c = X_c W_c^T`` (M, N). Everything the methods need is a function of the first and second
moments of (X, Y), which :class:`LayerStats` accumulates batch by batch (nothing of size M is kept):

- the Gram matrix ``G[c, d] = <z_c, z_d>`` and ``r[c] = <z_c, Y>`` (centred), which ThiNet's greedy
  selection and Channel Pruning's LASSO work on, without forming any ``z_c``;
- the normal equations of the least-squares fit of the kept channels' weights to ``Y``.

The moments are centred: every fit has an intercept, which the caller folds into the running mean of
the BatchNorm after the consumer (the convolutions have no bias). That is our addition to both papers;
it restores the mean contribution of the removed channels (ReLU outputs have a non-zero mean), exactly.
All of it is batched torch linear algebra in float64 on the statistics' device (the GPU when present).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from reidcompress.errors import MethodError
from reidcompress.prune.criteria._base import Criterion, combine_members
from reidcompress.prune.criteria.l1 import L1Norm

__all__ = [
    "SAMPLES_PER_IMAGE",
    "RIDGE",
    "Positions",
    "sample_positions",
    "gather_patches",
    "gather_outputs",
    "LayerStats",
    "contribution_gram",
    "least_squares",
    "ReconstructionCriterion",
    "conv_in_members",
]

# Both papers sample 10 output positions per calibration image.
SAMPLES_PER_IMAGE = 10
# Ridge of the least-squares fits, relative to the mean diagonal of the normal matrix, pulling the solution
# toward the current weights: with few calibration images a 3x3 consumer has nearly as many unknowns per
# output (kept channels x 9) as samples, and an unregularised fit would memorise the calibration set.
RIDGE = 1e-3

Positions = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (image index, row, column), each (M,)


def sample_positions(batch: int, height: int, width: int, per_image: int, generator: torch.Generator) -> Positions:
    """``per_image`` distinct output positions of each image (all of them when the map is smaller)."""
    n = min(per_image, height * width)
    flat = torch.stack([torch.randperm(height * width, generator=generator)[:n] for _ in range(batch)])
    return torch.arange(batch).repeat_interleave(n), (flat // width).flatten(), (flat % width).flatten()


def gather_patches(x: torch.Tensor, conv: nn.Conv2d, pos: Positions) -> torch.Tensor:
    """The (M, C*K) input patches that ``conv`` reads to compute its outputs at ``pos``.

    The column order (channel, then kernel row and column) is that of ``conv.weight.flatten(1)``.
    """
    if conv.groups != 1 or isinstance(conv.padding, str):
        raise MethodError("reconstruction supports ungrouped convolutions with numeric padding only")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    b, oy, ox = (t.to(x.device) for t in pos)
    xp = F.pad(x, (pw, pw, ph, ph))
    rows = oy[:, None] * sh + torch.arange(kh, device=x.device)[None] * dh  # (M, kh)
    cols = ox[:, None] * sw + torch.arange(kw, device=x.device)[None] * dw  # (M, kw)
    patches = xp[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (M, kh, kw, C)
    return patches.permute(0, 3, 1, 2).flatten(1)


def gather_outputs(y: torch.Tensor, pos: Positions) -> torch.Tensor:
    """The (M, N) outputs of a convolution at ``pos``."""
    b, oy, ox = (t.to(y.device) for t in pos)
    return y[b, :, oy, ox]


class LayerStats:
    """Streaming moments of a consumer's input patches X (M, D) and target outputs Y (M, N), in float64."""

    def __init__(self, dim: int, outputs: int, device: torch.device | str) -> None:
        kw: dict[str, Any] = {"dtype": torch.float64, "device": device}
        self.count = 0
        self.sum_x = torch.zeros(dim, **kw)
        self.sum_y = torch.zeros(outputs, **kw)
        self.xx = torch.zeros(dim, dim, **kw)
        self.xy = torch.zeros(dim, outputs, **kw)
        self.yy = torch.zeros((), **kw)

    @torch.no_grad()
    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double().to(self.xx.device), y.double().to(self.xx.device)
        self.count += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += y.pow(2).sum()

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean_x, mean_y, cov_xx, cov_xy, total y variance), second moments summed over the samples."""
        if self.count == 0:
            raise MethodError("reconstruction: the calibration data gave no sample")
        mx, my = self.sum_x / self.count, self.sum_y / self.count
        cxx = self.xx - self.count * torch.outer(mx, mx)
        cxy = self.xy - self.count * torch.outer(mx, my)
        return mx, my, cxx, cxy, self.yy - self.count * my.pow(2).sum()


def contribution_gram(stats: LayerStats, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``G`` (C, C), ``r`` (C,) and ``|Y|^2`` of the centred per-channel contributions ``z_c = X_c W_c^T``.

    ``G[c, d] = sum over kernel taps of (W^T W) * cov_xx`` in the (c, d) block, so no (M, N, C) tensor is formed.
    """
    n, c = weight.shape[:2]
    w = weight.detach().double().reshape(n, -1).to(stats.xx.device)
    _, _, cxx, cxy, yy = stats.centred()
    k = w.shape[1] // c
    gram = ((w.T @ w) * cxx).reshape(c, k, c, k).sum(dim=(1, 3))
    r = (w.T * cxy).reshape(c, k, -1).sum(dim=(1, 2))
    return gram, r, yy


def _solve_ridge(a: torch.Tensor, b: torch.Tensor, prior: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin ``x^T a x - 2 b^T x + alpha |x - prior|^2`` per column: ``(a + alpha I) x = b + alpha prior``."""
    alpha = ridge * a.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    return torch.linalg.solve(a + alpha * eye, b + alpha * prior)


def least_squares(
    stats: LayerStats, weight: torch.Tensor, keep: torch.Tensor, ridge: float = RIDGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept channels' weights (N, |keep|, kh, kw) that best reproduce Y, and the fit's intercept (N,).

    Channel Pruning's reconstruction (He et al., 2017, eq. 1 with beta fixed): a linear regression of the
    original outputs on the kept input channels' patches, one right-hand side per output channel.
    """
    n, c, kh, kw = weight.shape
    k = kh * kw
    mx, my, cxx, cxy, _ = stats.centred()
    cols = (keep.to(cxx.device)[:, None] * k + torch.arange(k, device=cxx.device)[None]).flatten()
    w0 = weight.detach().double().reshape(n, -1).to(cxx.device)[:, cols]
    w = _solve_ridge(cxx[cols][:, cols], cxy[cols], w0.T, ridge).T  # (N, |keep| * K)
    intercept = my - w @ mx[cols]
    return w.reshape(n, len(keep), kh, kw), intercept


def conv_in_members(group: tp.Group) -> list[tuple[nn.Conv2d, list[int], list[int]]]:
    """The convolutions whose input channels the group removes: the consumers of its channels."""
    return [
        (dep.target.module, list(idxs), list(group[i].root_idxs))
        for i, (dep, idxs) in enumerate(group)
        if dep.handler == tp.prune_conv_in_channels and isinstance(dep.target.module, nn.Conv2d)
    ]


class _ChannelMoments:
    """Per-channel (K, K) blocks of the patch covariance and the output variance of one convolution: all
    that a channel's contribution on its own needs (the full covariance of every layer would not fit)."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: tuple[torch.Tensor, ...] = ()  # sum of patches (C, K), of their outer products (C, K, K), of y, y^2

    def add(self, patches: torch.Tensor, y: torch.Tensor, channels: int) -> None:
        x, y = patches.double().reshape(patches.shape[0], channels, -1), y.double()  # (M, C, K), (M, N)
        parts = (x.sum(0), torch.einsum("mci,mcj->cij", x, x), y.sum(0), y.pow(2).sum())
        self.sums = parts if not self.sums else tuple(a + b for a, b in zip(self.sums, parts, strict=True))
        self.count += x.shape[0]

    def relative_contributions(self, weight: torch.Tensor) -> torch.Tensor:
        """Each input channel's centred contribution variance over the output's total variance."""
        sum_x, xx, sum_y, yy = self.sums
        mx = sum_x / self.count
        cov = xx - self.count * torch.einsum("ci,cj->cij", mx, mx)
        w = weight.detach().double().to(cov.device).flatten(2)  # (N, C, K)
        per_channel = torch.einsum("nci,ncj,cij->c", w, w, cov)
        total = yy - sum_y.pow(2).sum() / self.count
        return per_channel / total.clamp_min(1e-12)


class ReconstructionCriterion(Criterion):
    """Base of the next-layer reconstruction methods (driven by ``strategies.reconstruction``).

    ``calibrate`` + ``__call__`` give one score per channel before any surgery, used to plan how many
    channels each group keeps (global scope) and to select residual-stream channels: the fraction of its
    consumers' output variance a channel alone contributes. ``select`` and ``reconstruct`` are the
    method's own selection and weight update, run layer by layer on the network pruned so far.
    """

    needs_data = True

    def __init__(self) -> None:
        self._scores: dict[nn.Module, torch.Tensor] = {}

    def select(self, gram: torch.Tensor, r: torch.Tensor, yy: torch.Tensor, n_keep: int) -> torch.Tensor:
        """Indices (sorted) of the ``n_keep`` input channels of one consumer to keep."""
        raise NotImplementedError

    def reconstruct(
        self, stats: LayerStats, weight: torch.Tensor, keep: torch.Tensor, gram: torch.Tensor, r: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New weights of the kept input channels (N, |keep|, kh, kw) and the intercept (N,)."""
        raise NotImplementedError

    @torch.no_grad()
    def calibrate(self, model: nn.Module, batches: Iterable[Any], *, device: torch.device | str = "cpu") -> None:
        moments: dict[nn.Conv2d, _ChannelMoments] = {}
        generator = torch.Generator().manual_seed(0)

        def hook(conv: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            assert isinstance(conv, nn.Conv2d)
            pos = sample_positions(out.shape[0], out.shape[2], out.shape[3], SAMPLES_PER_IMAGE, generator)
            patches, y = gather_patches(inputs[0], conv, pos), gather_outputs(out, pos)
            moments.setdefault(conv, _ChannelMoments()).add(patches, y, conv.in_channels)

        was_training = model.training
        model.eval()
        # Depthwise convs are never consumers: they are pruned with their producer, inside the group.
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        handles = [m.register_forward_hook(hook) for m in convs]
        try:
            for batch in batches:
                model(batch[0].to(device))
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        if not moments:
            raise MethodError(f"{self.name}: the calibration data gave no batch")
        self._scores = {conv: m.relative_contributions(conv.weight).cpu() for conv, m in moments.items()}

    def __call__(self, group: tp.Group) -> torch.Tensor:
        members = conv_in_members(group)
        if not members:
            # Read only by a fully connected layer (OSNet's conv5 by its ``fc``): no convolution to
            # reconstruct; the producers' filter L1 norms rank the channels.
            return L1Norm()(group)
        if any(conv not in self._scores for conv, _, _ in members):
            raise MethodError(f"{self.name}: call calibrate() on the unpruned model before scoring")
        return combine_members([(self._scores[conv][idxs], root) for conv, idxs, root in members], len(group[0].idxs))
