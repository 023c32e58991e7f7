"""CMC, mAP and mINP under the Market-1501 protocol, from a distance matrix or from features.

The protocol is torchreid's ``eval_market1501`` (mINP as fast-reid computes it): per query, gallery
items with the query's pid and camera are dropped; a query with no true match left is skipped; CMC
is the fraction of valid queries whose first true match is within rank k; AP averages the precision
at each true match; INP is (number of true matches) / (rank of the hardest one).

Queries are processed in chunks (vectorised within a chunk), so memory stays bounded. Items at
equal distance are ordered by the ``ties`` rule: ``"argsort"`` (the default of :func:`rank_metrics`
and :func:`evaluate_rank`) is torchreid's ``np.argsort`` order, so every number is torchreid's even
with ties; ``"stable"`` (the default of :func:`evaluate_features`) orders them by gallery index
and is much cheaper when float32 distances tie often. Without ties both give the same numbers.
CMC is bit-identical to torchreid's; AP sums the same per-match terms in another order, so mAP and
mINP can differ from torchreid's in the last bits (about 1e-16 relative). Two exceptions to the
torchreid behaviour: when fewer kept items than ``max_rank`` remain for a query, its CMC stays at 1
where torchreid would fail on a ragged array, and non-finite distances raise InputError.
"""

from __future__ import annotations

import numpy as np
import torch

from reidcompress.errors import InputError
from reidcompress.evaluation._ranking import (
    GalleryIndex,
    RankAccumulator,
    check_labels,
    check_max_rank,
    check_ties,
    positive_ranks,
)
from reidcompress.evaluation.distance import BLOCK_ROWS, as_feature_tensor, distance_chunks

__all__ = ["evaluate_features", "evaluate_rank", "rank_metrics"]

_DEFAULT_BUDGET_MB = 256.0


def _as_distmat(distmat: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``distmat`` as a float (Q, G) array, or tensor (left on its device; moved a chunk at a time)."""
    dist = distmat.detach() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    if dist.ndim != 2:
        raise InputError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(dist.shape)}")
    if dist.shape[0] == 0 or dist.shape[1] == 0:
        raise InputError("distmat must have at least one query and one gallery item")
    if isinstance(dist, torch.Tensor):
        return dist if dist.dtype in (torch.float32, torch.float64) else dist.double()
    return dist if dist.dtype in (np.float32, np.float64) else dist.astype(np.float64)


def _numpy_rows(dist: np.ndarray | torch.Tensor) -> np.ndarray:
    return dist.cpu().numpy() if isinstance(dist, torch.Tensor) else dist


def _chunk_rows(chunk_size: int | None, bytes_per_row: float, memory_budget_mb: float) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        return int(chunk_size)
    if memory_budget_mb <= 0:
        raise InputError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
    return max(1, int(memory_budget_mb * 2**20 // bytes_per_row))


def rank_metrics(
    distmat: np.ndarray | torch.Tensor,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    *,
    ties: str = "argsort",
    chunk_size: int | None = None,
    memory_budget_mb: float = _DEFAULT_BUDGET_MB,
) -> dict:
    """Market-1501 metrics of a query-gallery distance matrix.

    Args:
        distmat: (Q, G) distances, numpy array or tensor (a CUDA tensor is copied to the CPU one
            chunk at a time).
        q_pids, g_pids: identity labels (pid 0 distractors and -1 junk are ordinary non-matches).
        q_camids, g_camids: camera labels.
        max_rank: CMC length; lowered to G (with a warning) for a smaller gallery.
        ties: ``"argsort"`` (torchreid's order) or ``"stable"`` (gallery order) for equal distances.
        chunk_size: query rows per chunk; by default chosen from ``memory_budget_mb``.
        memory_budget_mb: working memory per chunk when ``chunk_size`` is not given.

    Returns:
        dict(cmc=float32 array of length max_rank, mAP, mINP (floats in [0, 1]), num_valid_queries).

    Raises:
        InputError: shapes or labels that do not fit, non-finite distances, no valid query.
    """
    check_ties(ties)
    dist = _as_distmat(distmat)
    num_q, num_g = dist.shape
    labels = check_labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    acc = RankAccumulator(check_max_rank(max_rank, num_g))
    index = GalleryIndex(labels.g_pids, labels.g_camids)
    # Per query row: a sorted copy of the row (plus, for a tensor, the row itself on the CPU).
    rows = _chunk_rows(chunk_size, num_g * 2 * dist.dtype.itemsize, memory_budget_mb)
    buffer = np.empty((min(rows, num_q), num_g), dtype=_numpy_rows(dist[:1]).dtype)
    for s in range(0, num_q, rows):
        q = slice(s, s + rows)
        acc.add(*positive_ranks(_numpy_rows(dist[q]), labels.q_pids[q], labels.q_camids[q], index, ties, buffer))
    return acc.result()


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """``(cmc, mAP)`` as torchreid's ``evaluate_rank``; see :func:`rank_metrics` for the arguments."""
    metrics = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    return metrics["cmc"], metrics["mAP"]


def evaluate_features(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    metric: str = "euclidean",
    max_rank: int = 50,
    chunk_size: int | None = None,
    *,
    ties: str = "stable",
    memory_budget_mb: float = _DEFAULT_BUDGET_MB,
) -> dict:
    """Market-1501 metrics straight from features, in bounded memory.

    Distances are computed (on the GPU when the features are CUDA tensors) and ranked (on the CPU)
    one chunk of queries at a time, so the full matrix never exists; the numbers are exactly those of
    ``rank_metrics(compute_distance(qf, gf, metric), ..., ties=ties)`` for every ``chunk_size``.

    Args:
        qf, gf: query (Q, D) and gallery (G, D) features, numpy arrays or tensors on one device.
        q_pids, g_pids, q_camids, g_camids: labels as in :func:`rank_metrics`.
        metric: ``"euclidean"`` (squared, as torchreid) or ``"cosine"``.
        max_rank: CMC length.
        chunk_size: query rows per chunk; by default chosen from ``memory_budget_mb``.
        ties: ``"stable"`` (gallery order) or ``"argsort"`` (torchreid's order, slower when many
            true matches are tied) for equal distances.
        memory_budget_mb: working memory for distances when ``chunk_size`` is not given (the
            features and one block of distances come on top).

    Returns:
        dict(cmc, mAP, mINP, num_valid_queries) as :func:`rank_metrics`.
    """
    check_ties(ties)
    q_t, g_t = as_feature_tensor(qf, "qf"), as_feature_tensor(gf, "gf")
    num_q, num_g = q_t.shape[0], g_t.shape[0]
    labels = check_labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    acc = RankAccumulator(check_max_rank(max_rank, num_g))
    index = GalleryIndex(labels.g_pids, labels.g_camids)
    # Per query row: the chunk and its sorted copy.
    itemsize = 8 if torch.float64 in (q_t.dtype, g_t.dtype) else 4
    rows = _chunk_rows(chunk_size, num_g * 2 * itemsize, memory_budget_mb)
    if chunk_size is None and rows > BLOCK_ROWS:
        rows -= rows % BLOCK_ROWS  # whole blocks: no copies to stitch chunks together
    buffer = None
    for start, dist in distance_chunks(q_t, g_t, metric, rows, reuse=True):
        q = slice(start, start + dist.shape[0])
        if buffer is None:
            buffer = np.empty((min(rows, num_q), num_g), dtype=_numpy_rows(dist[:1]).dtype)
        acc.add(*positive_ranks(_numpy_rows(dist), labels.q_pids[q], labels.q_camids[q], index, ties, buffer))
    return acc.result()
