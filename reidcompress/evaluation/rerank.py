"""k-reciprocal re-ranking: Zhong, Zheng, Cao and Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017.

Gives the numbers of the implementation torchreid and fast-reid ship (``re_ranking`` in
``reid/utils/rerank.py`` and ``evaluation/rerank.py``), bit for bit, in a fraction of its memory. That
implementation builds several dense (Q+G)^2 matrices (the distances, their argsort, the encodings V
and their query-expanded copy: about 9 GB at Market-1501 size). Here:

- the (Q+G)^2 distance matrix is only ever formed one block of rows at a time, and only the
  ``max(k1 + 1, k2)`` nearest neighbours of each item are kept (an argpartition, with numpy's
  argsort re-run on the rows where a tie makes the neighbour order ambiguous);
- the k-reciprocal sets, their expansion and the weights are computed for all items at once on
  (items x k1 x k1/2) index arrays;
- the encodings V are sparse (a few dozen non-zeros per row) and the Jaccard overlaps are
  accumulated column by column of V, in the reference's summation order.

Distances are squared and scaled exactly as the reference does, so pass the distances you would pass
to it (torchreid passes its squared euclidean or cosine distances).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reidcompress.errors import InputError

__all__ = ["re_ranking"]

_ROW_CHUNK = 512  # rows of the (Q+G)^2 distance matrix formed at a time


def _as_matrix(x: np.ndarray | torch.Tensor, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


@dataclass(frozen=True)
class _Blocks:
    """The reference's (Q+G)^2 matrix ``[[q_q, q_g], [q_g.T, g_g]]``, never materialised."""

    q_g: np.ndarray
    q_q: np.ndarray
    g_g: np.ndarray

    @property
    def num_q(self) -> int:
        return self.q_g.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(self.q_g, self.q_q, self.g_g)  # as np.concatenate would promote

    def columns(self, start: int, stop: int) -> np.ndarray:
        """Columns ``start:stop`` of the matrix, as rows (the reference works on the transpose)."""
        q = self.num_q
        parts = []
        if start < q:
            s = slice(start, min(stop, q))
            parts.append(np.concatenate([self.q_q[:, s].T, self.q_g[s]], axis=1, dtype=self.dtype))
        if stop > q:
            s = slice(max(start, q) - q, stop - q)
            parts.append(np.concatenate([self.q_g[:, s].T, self.g_g[:, s].T], axis=1, dtype=self.dtype))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def entries(self, j: np.ndarray, i: np.ndarray) -> np.ndarray:
        """``matrix[j, i]`` for arrays of indices."""
        q = self.num_q
        out = np.empty(len(j), dtype=self.dtype)
        for mask, src, a, b in (
            ((j < q) & (i < q), self.q_q, j, i),
            ((j < q) & (i >= q), self.q_g, j, i - q),
            ((j >= q) & (i < q), self.q_g, i, j - q),
            ((j >= q) & (i >= q), self.g_g, j - q, i - q),
        ):
            out[mask] = src[a[mask], b[mask]]
        return out


def _square(x: np.ndarray) -> np.ndarray:
    return np.power(x, 2).astype(np.float32, copy=False)


def _smallest(dist: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` columns of ``np.argsort(dist, axis=1)``, without sorting whole rows."""
    if k >= dist.shape[1]:
        return np.argsort(dist, axis=1)[:, :k]
    # torch's top-k is several times faster than np.argpartition and sorts its k values.
    top = torch.topk(torch.from_numpy(dist), k + 1, dim=1, largest=False, sorted=True)
    vals, cand = top.values.numpy(), top.indices.numpy()
    # Where the k+1 smallest values are distinct the first k are fixed; else argsort's tie order decides.
    for r in np.flatnonzero((np.diff(vals, axis=1) <= 0).any(axis=1)):
        cand[r, :k] = np.argsort(dist[r])[:k]
    return cand[:, :k]


def _initial_ranks(blocks: _Blocks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k`` nearest neighbours (the reference's ``initial_rank[:, :k]``) and the
    per-item scale (its largest squared distance) of the reference's ``original_dist``."""
    n = blocks.q_g.shape[0] + blocks.q_g.shape[1]
    top = np.empty((n, k), dtype=np.int64)
    scale = np.empty(n, dtype=np.float32)
    for start in range(0, n, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n)
        sq = _square(blocks.columns(start, stop))
        scale[start:stop] = sq.max(axis=1)
        if not np.isfinite(scale[start:stop]).all():  # a NaN or inf anywhere reaches the row's max
            raise InputError("distances must be finite (and their squares within float32 range)")
        top[start:stop] = _smallest(sq / scale[start:stop, None], k)
    return top, scale


def _reciprocal(top: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-reciprocal neighbours of each item among its first ``k`` ranks: (n, k) indices, -1 if not."""
    fwd = top[:, :k]
    mutual = (top[fwd, :k] == np.arange(len(top))[:, None, None]).any(axis=2)
    return np.where(mutual, fwd, -1), mutual.sum(axis=1)


def _expansion_sets(top: np.ndarray, k1: int) -> np.ndarray:
    """Each item's k-reciprocal set joined with the half-size sets of its members that overlap it by
    more than 2/3 (the reference's ``k_reciprocal_expansion_index``): (n, width) sorted, ``n``-padded."""
    n = len(top)
    recip, _ = _reciprocal(top, min(k1 + 1, n))
    half, half_len = _reciprocal(top, min(int(np.around(k1 / 2.0)) + 1, n))
    member = np.maximum(recip, 0)
    expansions = []
    for start in range(0, n, _ROW_CHUNK):  # chunks bound the (rows x k1 x k1/2 x k1) comparison
        r = slice(start, min(start + _ROW_CHUNK, n))
        cand = half[member[r]]  # (rows, k1 + 1, half) candidate sets
        common = ((cand[..., None] == recip[r, None, None, :]) & (cand[..., None] >= 0)).any(axis=3).sum(axis=2)
        keep = (recip[r] >= 0) & (common > 2.0 / 3 * half_len[member[r]])
        expansions.append(np.where(keep[..., None], cand, -1).reshape(cand.shape[0], -1))
    members = np.concatenate([recip, np.concatenate(expansions)], axis=1)
    members = np.sort(np.where(members < 0, n, members), axis=1)
    members[:, 1:][members[:, 1:] == members[:, :-1]] = n  # drop repeats
    members = np.sort(members, axis=1)
    width = max(int((members < n).sum(axis=1).max()), 1)
    return members[:, :width]


@dataclass(frozen=True)
class _Sparse:
    """Rows of the reference's V as (row, col, value) entries sorted by row, then col."""

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray


def _encode(blocks: _Blocks, sets: np.ndarray, scale: np.ndarray) -> _Sparse:
    """V[i, j] = exp(-d(i, j)) / sum_j exp(-d(i, j)) over j in the expanded set of i."""
    n = len(sets)
    valid = sets < n
    rows, slot = np.nonzero(valid)
    cols = sets[rows, slot]
    dist = _square(blocks.entries(cols, rows)) / scale[rows]
    weight = np.zeros(sets.shape, dtype=np.float32)
    weight[rows, slot] = np.exp(-dist)
    lengths = valid.sum(axis=1)
    total = np.empty(n, dtype=np.float32)
    for length in np.unique(lengths):  # rows of one length summed together: numpy's 1-D pairwise sum
        same = np.flatnonzero(lengths == length)
        total[same] = weight[same, :length].sum(axis=1)
    return _Sparse(rows, cols, weight[rows, slot] / total[rows])


def _expand_queries(v: _Sparse, neighbours: np.ndarray, n: int) -> _Sparse:
    """V_qe[i] = mean of V over the first ``k2`` neighbours of i, summed in neighbour order."""
    indptr = np.searchsorted(v.rows, np.arange(n + 1))
    k2 = neighbours.shape[1]
    nnz = np.diff(indptr)[neighbours]  # (n, k2)
    owner = np.repeat(np.arange(n * k2), nnz.ravel())
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(nnz.ravel()) - nnz.ravel(), nnz.ravel())
    src = indptr[neighbours.ravel()[owner]] + offset
    key = owner // k2 * n + v.cols[src]  # (row of V_qe, col); stable sort keeps neighbour order
    order = np.argsort(key, kind="stable")
    key, slot, vals = key[order], owner[order] % k2, v.vals[src[order]]
    uniq, group = np.unique(key, return_inverse=True)
    terms = np.zeros((len(uniq), k2), dtype=np.float32)
    terms[group, slot] = vals
    acc = terms[:, 0]
    for j in range(1, k2):  # left to right, as np.mean reduces axis 0; absent rows add exact zeros
        acc = acc + terms[:, j]
    mean = acc / k2
    nonzero = mean != 0
    return _Sparse(uniq[nonzero] // n, uniq[nonzero] % n, mean[nonzero])


def _min_overlap(v: _Sparse, num_q: int, n: int) -> np.ndarray:
    """sum_k min(V[i, k], V[g, k]) for queries i and gallery items g (the reference's ``temp_min``),
    accumulated in float32 one column k of V at a time, in ascending k as the reference does."""
    order = np.lexsort((v.rows, v.cols))
    rows, cols, vals = v.rows[order], v.cols[order], v.vals[order]
    bounds = np.searchsorted(cols, np.arange(n + 1))
    num_query_entries = np.bincount(cols[rows < num_q], minlength=n)
    overlap = np.zeros((num_q, n - num_q), dtype=np.float32)
    for k in np.flatnonzero((num_query_entries > 0) & (np.diff(bounds) > num_query_entries)):
        lo, mid, hi = bounds[k], bounds[k] + num_query_entries[k], bounds[k + 1]
        overlap[np.ix_(rows[lo:mid], rows[mid:hi] - num_q)] += np.minimum(vals[lo:mid, None], vals[None, mid:hi])
    return overlap


def re_ranking(
    q_g_dist: np.ndarray | torch.Tensor,
    q_q_dist: np.ndarray | torch.Tensor,
    g_g_dist: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked query-gallery distances (Zhong et al., CVPR 2017), as torchreid / fast-reid compute them.

    Args:
        q_g_dist: (Q, G) query-gallery distances.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhoods.
        k2: neighbours averaged in the local query expansion (1 = none).
        lambda_value: weight of the original distance against the Jaccard distance.

    Returns:
        float32 (Q, G): ``(1 - lambda) * jaccard + lambda * original``, where ``original`` is the
        squared input distance scaled per query by its largest squared distance.

    Raises:
        InputError: shapes that do not fit, non-finite distances, k1/k2 < 1, lambda outside [0, 1].
    """
    q_g = np.asarray(q_g_dist.detach().cpu() if isinstance(q_g_dist, torch.Tensor) else q_g_dist)
    if q_g.ndim != 2 or 0 in q_g.shape:
        raise InputError(f"q_g_dist must be a non-empty 2-D matrix, got shape {q_g.shape}")
    num_q, num_g = q_g.shape
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise InputError(f"lambda_value must be in [0, 1], got {lambda_value}")
    blocks = _Blocks(
        _as_matrix(q_g, "q_g_dist", (num_q, num_g)),
        _as_matrix(q_q_dist, "q_q_dist", (num_q, num_q)),
        _as_matrix(g_g_dist, "g_g_dist", (num_g, num_g)),
    )
    n = num_q + num_g
    top, scale = _initial_ranks(blocks, min(max(k1 + 1, k2), n))
    v = _encode(blocks, _expansion_sets(top, k1), scale)
    if k2 != 1:
        v = _expand_queries(v, top[:, : min(k2, n)], n)
    dist = _min_overlap(v, num_q, n)
    # jaccard = 1 - t / (2 - t), then (1 - lambda) * jaccard + lambda * original, in place.
    denom = np.subtract(2.0, dist)
    np.divide(dist, denom, out=dist)
    del denom
    np.subtract(1, dist, out=dist)
    lam = float(lambda_value)
    dist *= 1 - lam
    original = _square(blocks.q_g.astype(blocks.dtype, copy=False))
    original /= scale[:num_q, None]
    original *= lam
    dist += original
    return dist
