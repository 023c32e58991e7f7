"""k-reciprocal re-ranking: a hand-worked case, a dense textbook oracle, invariances, validation."""

from __future__ import annotations

import numpy as np
import pytest

from reidcompress.errors import InputError
from reidcompress.evaluation import compute_distance
from reidcompress.evaluation.rerank import re_ranking


def dense_oracle(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al.'s algorithm written plainly on dense float64 matrices (tiny problems only)."""
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    dist = (full / full.max(axis=0)).T
    n, num_q = len(dist), len(q_g)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, : k + 1] if i in rank[j, : k + 1]]

    enc = np.zeros((n, n))
    for i in range(n):
        base = set(reciprocal(i, k1))
        expanded = set(base)
        for c in base:
            half = reciprocal(c, int(np.around(k1 / 2)))
            if len(set(half) & base) > 2 / 3 * len(half):
                expanded |= set(half)
        idx = sorted(expanded)
        weight = np.exp(-dist[i, idx])
        enc[i, idx] = weight / weight.sum()
    if k2 > 1:
        enc = np.stack([enc[rank[i, :k2]].mean(axis=0) for i in range(n)])
    overlap = np.array([[np.minimum(enc[i], enc[num_q + j]).sum() for j in range(n - num_q)] for i in range(num_q)])
    return (1 - lam) * (1 - overlap / (2 - overlap)) + lam * dist[:num_q, num_q:]


def random_distances(seed, num_q=8, num_g=30, dim=6, metric="euclidean"):
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((num_q, dim)).astype(np.float32)
    gf = rng.standard_normal((num_g, dim)).astype(np.float32)
    return compute_distance(qf, gf, metric), compute_distance(qf, qf, metric), compute_distance(gf, gf, metric)


def test_hand_worked_three_points():
    # Points on a line: query at 0, gallery at 1 and 10. With k1=1 the query and the first gallery
    # item are mutual nearest neighbours; the far item is only its own.
    q_g, q_q, g_g = np.array([[1.0, 10.0]]), np.array([[0.0]]), np.array([[0.0, 9.0], [9.0, 0.0]])
    # Squared distances scaled by each item's largest: the query's row is [0, 1/100, 100/100];
    # item 1's is [1/81, 0, 81/81].
    v_q = np.array([1.0, np.exp(-0.01)]) / (1 + np.exp(-0.01))
    v_1 = np.array([np.exp(-1 / 81), 1.0]) / (1 + np.exp(-1 / 81))
    overlap = np.minimum(v_q, v_1).sum()
    jaccard = np.array([1 - overlap / (2 - overlap), 1.0])  # nothing shared with the far item
    expected = 0.7 * jaccard + 0.3 * np.array([0.01, 1.0])
    out = re_ranking(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.3)
    np.testing.assert_allclose(out, expected[None, :], rtol=1e-6, atol=1e-6)  # float32 arithmetic


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (4, 1, 0.5), (5, 3, 0.0), (7, 2, 1.0)])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_dense_oracle(k1, k2, lam, metric):
    q_g, q_q, g_g = random_distances(k1 + k2, metric=metric)
    out = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    assert out.dtype == np.float32 and out.shape == q_g.shape
    np.testing.assert_allclose(out, dense_oracle(q_g, q_q, g_g, k1, k2, lam), rtol=2e-5, atol=2e-6)


def test_lambda_one_gives_the_scaled_original_distance():
    q_g, q_q, g_g = random_distances(1)
    scale = np.maximum((q_q**2).max(axis=0), (q_g**2).max(axis=1))
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, lambda_value=1.0), q_g**2 / scale[:, None], rtol=1e-6)


def test_values_stay_in_unit_interval_and_self_matches_rank_first():
    rng = np.random.default_rng(2)
    gf = rng.standard_normal((40, 8)).astype(np.float32)
    qf = gf[:10] + 0.01 * rng.standard_normal((10, 8)).astype(np.float32)  # near-copies of gallery 0-9
    out = re_ranking(compute_distance(qf, gf), compute_distance(qf, qf), compute_distance(gf, gf))
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6  # up to float32 rounding
    np.testing.assert_array_equal(out.argmin(axis=1), np.arange(10))


def test_equivariant_under_permutation_of_queries_and_gallery():
    q_g, q_q, g_g = random_distances(3, num_q=10, num_g=50)
    out = re_ranking(q_g, q_q, g_g, k1=6, k2=3)
    pq, pg = np.random.default_rng(0).permutation(10), np.random.default_rng(1).permutation(50)
    permuted = re_ranking(q_g[pq][:, pg], q_q[pq][:, pq], g_g[pg][:, pg], k1=6, k2=3)
    np.testing.assert_allclose(permuted, out[pq][:, pg], rtol=1e-6, atol=1e-7)  # sums run in index order


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    mats = random_distances(4)
    np.testing.assert_array_equal(re_ranking(*(torch.from_numpy(m) for m in mats)), re_ranking(*mats))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, b, c: (a, b[:-1], c), "q_q_dist must have shape"),
        (lambda a, b, c: (a, b, c[:, :-1]), "g_g_dist must have shape"),
        (lambda a, b, c: (np.where(a > 5, np.nan, a), b, c), "finite"),
    ],
)
def test_bad_matrices_raise(change, message):
    with pytest.raises(InputError, match=message):
        re_ranking(*change(*random_distances(5)))


@pytest.mark.parametrize("kwargs", [{"k1": 0}, {"k2": 0}, {"lambda_value": 1.5}])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(InputError):
        re_ranking(*random_distances(6), **kwargs)
