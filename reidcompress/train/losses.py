"""Metric-learning and identity losses of the strong ReID baseline.

The triplet loss with batch-hard mining follows the seed survey (Masson et al., arXiv 1907.02547,
after Hermans et al., "In Defense of the Triplet Loss", 2017):

    L_TBH = 1/N_s * sum_a [ m + max_{y_p = y_a} d(f_a, f_p) - min_{y_n != y_a} d(f_a, f_n) ]_+

over the anchors of a P x K batch, with Euclidean distances. The soft-margin variant replaces the
hinge ``[m + x]_+`` by ``log(1 + exp(x))`` (Hermans et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.errors import InputError

__all__ = ["pairwise_distance", "triplet_batch_hard", "CrossEntropyLabelSmooth", "distillation_loss", "DISTILL_KINDS"]

DISTILL_KINDS = ("mse", "cosine")


def pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, N) between the rows of ``x``.

    The squared distance is clamped before the square root: sqrt has an infinite gradient at 0,
    which the zero diagonal (and duplicate images) would otherwise hit.
    """
    # Half precision (autocast) loses the small distance gaps that mining compares: stay in fp32.
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        sq = x.pow(2).sum(1, keepdim=True)
        d2 = sq + sq.t() - 2.0 * (x @ x.t())
        return d2.clamp(min=1e-12).sqrt()


def triplet_batch_hard(
    feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.3, soft: bool = False
) -> torch.Tensor:
    """Batch-hard triplet loss, averaged over the anchors of the batch.

    Args:
        feats: features (N, D); the strong baseline uses the pooled feature before the BNNeck.
        pids: identity labels (N,).
        margin: the margin ``m`` of the hinge (ignored when ``soft``).
        soft: use the soft margin ``log(1 + exp(d_ap - d_an))`` instead of the hinge.

    Raises:
        InputError: when the batch holds a single identity (no negative for any anchor).
    """
    if feats.dim() != 2 or pids.dim() != 1 or feats.shape[0] != pids.shape[0]:
        raise InputError(f"expected feats (N, D) and pids (N,), got {tuple(feats.shape)} and {tuple(pids.shape)}")
    dist = pairwise_distance(feats)
    same = pids.unsqueeze(0) == pids.unsqueeze(1)
    if bool(same.all()):
        raise InputError("a triplet batch needs at least two identities")
    # The anchor itself counts as a positive at distance ~0; it never wins the max when K >= 2
    # and keeps the loss defined for an identity sampled once.
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    gap = hardest_pos - hardest_neg
    losses = F.softplus(gap) if soft else F.relu(margin + gap)
    return losses.mean()


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing (Szegedy et al., 2016) on the BNNeck classifier's logits.

    The target is ``(1 - epsilon) * one_hot + epsilon / num_classes``, as torchreid's
    ``CrossEntropyLabelSmooth``; ``torch.nn.functional.cross_entropy`` computes exactly that.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise InputError(f"label smoothing must be in [0, 1), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.epsilon)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Feature distillation between L2-normalised student and teacher features (N, D).

    ``mse``: mean over the batch of the squared distance between the unit vectors (in [0, 4]);
    ``cosine``: mean of ``1 - cos``. On unit vectors the two differ by a factor of 2 only.
    """
    if kind not in DISTILL_KINDS:
        raise InputError(f"unknown distillation loss {kind!r}; valid: {', '.join(DISTILL_KINDS)}")
    if student.shape != teacher.shape:
        raise InputError(f"student features {tuple(student.shape)} and teacher's {tuple(teacher.shape)} differ")
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float().detach(), dim=1)
    if kind == "cosine":
        return (1.0 - (s * t).sum(1)).mean()
    return (s - t).pow(2).sum(1).mean()
