from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from reidcompress.errors import InputError
from reidcompress.train.losses import (
    CrossEntropyLabelSmooth,
    distillation_loss,
    pairwise_distance,
    triplet_batch_hard,
)


def _brute_force_tbh(feats: torch.Tensor, pids: list[int], margin: float, soft: bool) -> float:
    """The survey's L_TBH by enumeration: per anchor, hardest positive and hardest negative."""
    n = len(pids)
    total = 0.0
    for a in range(n):
        pos = [math.dist(feats[a].tolist(), feats[p].tolist()) for p in range(n) if pids[p] == pids[a]]
        neg = [math.dist(feats[a].tolist(), feats[q].tolist()) for q in range(n) if pids[q] != pids[a]]
        gap = max(pos) - min(neg)
        total += math.log1p(math.exp(gap)) if soft else max(margin + gap, 0.0)
    return total / n


def _brute_force_all_triplets_max(feats: torch.Tensor, pids: list[int], margin: float) -> float:
    """Equivalently: per anchor, the largest hinge over every (p, n) with y_p = y_a != y_n."""
    n = len(pids)
    d = [[math.dist(feats[i].tolist(), feats[j].tolist()) for j in range(n)] for i in range(n)]
    per_anchor = []
    for a in range(n):
        hinges = [
            max(margin + d[a][p] - d[a][q], 0.0)
            for p, q in itertools.product(range(n), range(n))
            if p != a and pids[p] == pids[a] and pids[q] != pids[a]
        ]
        per_anchor.append(max(hinges))
    return sum(per_anchor) / n


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("p", "k"), [(2, 2), (3, 4), (4, 3)])
def test_triplet_batch_hard_matches_brute_force(seed: int, p: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(p * k, 5, generator=g, dtype=torch.float64)
    pids = [i // k for i in range(p * k)]
    perm = torch.randperm(p * k, generator=g).tolist()
    feats, pids = feats[perm], [pids[i] for i in perm]
    t = torch.tensor(pids)
    for margin in (0.0, 0.3, 5.0):
        want = _brute_force_tbh(feats, pids, margin, soft=False)
        assert triplet_batch_hard(feats, t, margin).item() == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert want == pytest.approx(_brute_force_all_triplets_max(feats, pids, margin), rel=1e-9)
    soft = triplet_batch_hard(feats, t, soft=True).item()
    assert soft == pytest.approx(_brute_force_tbh(feats, pids, 0.0, soft=True), rel=1e-5)


def test_triplet_zero_when_separated_and_positive_when_not() -> None:
    pids = torch.tensor([0, 0, 1, 1])
    far = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    assert triplet_batch_hard(far, pids, margin=0.3).item() == 0.0
    mixed = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.2, 0.0], [5.0, 0.0]])
    # anchor 0: d_ap = 1, d_an = 0.2 -> 0.3 + 0.8 = 1.1
    assert triplet_batch_hard(mixed, pids, margin=0.3).item() > 1.0


def test_triplet_gradient_finite_with_duplicates() -> None:
    feats = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 1.0], [3.0, 1.0]], requires_grad=True)
    loss = triplet_batch_hard(feats, torch.tensor([0, 0, 1, 1]), margin=5.0)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_triplet_rejects_single_identity_and_bad_shapes() -> None:
    with pytest.raises(InputError, match="two identities"):
        triplet_batch_hard(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="expected feats"):
        triplet_batch_hard(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))


def test_pairwise_distance_matches_cdist() -> None:
    x = torch.randn(7, 4, dtype=torch.float64)
    assert torch.allclose(pairwise_distance(x), torch.cdist(x, x), atol=1e-6)


def test_label_smoothing_matches_formula() -> None:
    logits = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    eps = 0.1
    q = F.one_hot(y, 5).float() * (1 - eps) + eps / 5
    want = -(q * logits.log_softmax(1)).sum(1).mean()
    assert CrossEntropyLabelSmooth(eps)(logits, y).item() == pytest.approx(want.item(), rel=1e-6)
    assert CrossEntropyLabelSmooth(0.0)(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())
    with pytest.raises(InputError):
        CrossEntropyLabelSmooth(1.0)


def test_distillation_losses() -> None:
    s = torch.randn(4, 8)
    assert distillation_loss(s, 3 * s, "mse").item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(s, -s, "cosine").item() == pytest.approx(2.0, abs=1e-6)
    t = torch.randn(4, 8)
    assert distillation_loss(s, t, "mse").item() == pytest.approx(2 * distillation_loss(s, t, "cosine").item())
    with pytest.raises(InputError, match="unknown distillation"):
        distillation_loss(s, t, "kl")
