"""The Market-1501 ranking protocol on chunks of query rows, shared by every evaluation entry point.

Per query the protocol ranks the gallery by distance, drops the items that have the query's pid AND
camera, and looks at where the remaining true matches land. The metrics need nothing but the 0-based
rank of each remaining true match among the remaining items, and when a match's distance is unique
in its row that rank is

    #{gallery items closer than the match} - #{dropped items closer than the match}.

So a chunk needs one value sort per row (several times cheaper than an argsort) and binary searches.
Only a true match whose distance is tied with another item needs more, and the order of tied items
is a choice: ``"argsort"`` re-ranks such rows with ``np.argsort``, the call torchreid makes, so tie
order and every number are torchreid's; ``"stable"`` puts tied items in gallery order (as
``np.argsort(kind="stable")``), found by comparing only the tied rows. Float32 distances tie often
at scale (most MSMT17 rows have a tied true match), which makes ``"stable"`` the fast rule.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from reidcompress.errors import InputError

__all__ = [
    "TIES",
    "Labels",
    "GalleryIndex",
    "RankAccumulator",
    "check_labels",
    "check_max_rank",
    "check_ties",
    "positive_ranks",
]

_TIE_SLAB = 64


@dataclass(frozen=True)
class Labels:
    """Validated identity and camera labels, int64 numpy arrays."""

    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def _as_label_array(x: object, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise InputError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_labels(q_pids: object, g_pids: object, q_camids: object, g_camids: object, num_q: int, num_g: int) -> Labels:
    """Validate label arrays against the number of queries and gallery items."""
    labels = Labels(
        *(
            _as_label_array(x, n)
            for x, n in zip(
                (q_pids, g_pids, q_camids, g_camids), ("q_pids", "g_pids", "q_camids", "g_camids"), strict=True
            )
        )
    )
    for name, arr, expected in (
        ("q_pids", labels.q_pids, num_q),
        ("q_camids", labels.q_camids, num_q),
        ("g_pids", labels.g_pids, num_g),
        ("g_camids", labels.g_camids, num_g),
    ):
        if len(arr) != expected:
            side = "query" if name.startswith("q") else "gallery"
            raise InputError(f"{name} has {len(arr)} entries but there are {expected} {side} items")
    return labels


def check_max_rank(max_rank: int, num_g: int) -> int:
    """``max_rank``, lowered to the gallery size (with a warning) as torchreid does."""
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise InputError(f"max_rank must be a positive integer, got {max_rank!r}")
    if num_g < max_rank:
        warnings.warn(f"the gallery has only {num_g} items; CMC is computed up to rank {num_g}", stacklevel=3)
        return num_g
    return int(max_rank)


class GalleryIndex:
    """Gallery items grouped by pid, so each query's true matches are found without a full-row compare."""

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray) -> None:
        self.g_pids, self.g_camids = g_pids, g_camids
        self._order = np.argsort(g_pids, kind="stable")
        self._sorted_pids = g_pids[self._order]

    def matches(self, q_pids: np.ndarray, q_camids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query row, gallery column) pairs sharing a pid, sorted by row, and which of them are dropped."""
        lo = np.searchsorted(self._sorted_pids, q_pids, side="left")
        counts = np.searchsorted(self._sorted_pids, q_pids, side="right") - lo
        rows = np.repeat(np.arange(len(q_pids)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self._order[np.repeat(lo, counts) + offsets]
        return rows, cols, self.g_camids[cols] == q_camids[rows]


TIES = ("argsort", "stable")


def check_ties(ties: str) -> None:
    if ties not in TIES:
        raise InputError(f"unknown ties rule {ties!r}; valid: {', '.join(TIES)}")


@dataclass(frozen=True)
class _Ragged:
    """Per-query lists of (distance, gallery column) as (C, widest) matrices; padding is (+inf, G)."""

    values: torch.Tensor
    cols: torch.Tensor


def _pad_rows(rows: np.ndarray, values: torch.Tensor, cols: torch.Tensor, num_rows: int, num_g: int) -> _Ragged:
    counts = np.bincount(rows, minlength=num_rows)
    width = max(int(counts.max(initial=0)), 1)
    slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    where = (torch.from_numpy(rows).to(values.device), torch.from_numpy(slot).to(values.device))
    out_v = torch.full((num_rows, width), float("inf"), dtype=values.dtype, device=values.device)
    out_c = torch.full((num_rows, width), num_g, dtype=torch.int64, device=values.device)
    out_v[where], out_c[where] = values, cols
    return _Ragged(out_v, out_c)


def _sort_rows(dist: torch.Tensor) -> torch.Tensor:
    if dist.is_cuda:
        return torch.sort(dist, dim=1).values
    # numpy's SIMD value sort is several times faster than torch's CPU sort.
    return torch.from_numpy(np.sort(dist.numpy(), axis=1))


def _argsort_ranks(row: np.ndarray, index: GalleryIndex, pid: int, camid: int) -> np.ndarray:
    """Ranks of the kept true matches in one row, ordered exactly as torchreid orders them."""
    order = np.argsort(row)
    match = index.g_pids[order] == pid
    keep = ~(match & (index.g_camids[order] == camid))
    return np.flatnonzero(match[keep])


def _tied_before(dist: torch.Tensor, pos: _Ragged, drop: _Ragged, tied: torch.Tensor) -> torch.Tensor:
    """For each tied true match: kept items at the same distance with a smaller gallery index."""
    r, j = torch.nonzero(tied, as_tuple=True)
    extra = torch.zeros(tied.shape, dtype=torch.int64, device=dist.device)
    arange = torch.arange(dist.shape[1], device=dist.device)
    for s in range(0, len(r), _TIE_SLAB):  # slabs bound the (ties x gallery) comparison
        rs, js = r[s : s + _TIE_SLAB], j[s : s + _TIE_SLAB]
        t, g = pos.values[rs, js, None], pos.cols[rs, js, None]
        same = ((dist[rs] == t) & (arange < g)).sum(dim=1)
        same_dropped = ((drop.values[rs] == t) & (drop.cols[rs] < g)).sum(dim=1)
        extra[rs, js] = same - same_dropped
    return extra


def positive_ranks(
    dist: torch.Tensor, q_pids: np.ndarray, q_camids: np.ndarray, index: GalleryIndex, ties: str = "argsort"
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of every kept true match of every query in a chunk of distance rows.

    Args:
        dist: (C, G) float distances, on any device.
        q_pids, q_camids: labels of the C queries.
        index: the gallery's labels.
        ties: order of items at equal distance: ``"argsort"`` as ``np.argsort`` (torchreid's
            order; re-sorts each row where a true match is tied), ``"stable"`` by gallery index.

    Returns:
        ``counts`` (C,) kept true matches per query, and ``ranks`` (C, W) int64: row i holds its
        ``counts[i]`` 0-based ranks among the kept items, ascending, then padding.
    """
    num_rows, num_g = dist.shape
    rows, cols, dropped = index.matches(q_pids, q_camids)
    device = dist.device
    cols_t, keep = torch.from_numpy(cols).to(device), torch.from_numpy(~dropped).to(device)
    values = dist[torch.from_numpy(rows).to(device), cols_t]
    pos = _pad_rows(rows[~dropped], values[keep], cols_t[keep], num_rows, num_g)
    drop = _pad_rows(rows[dropped], values[~keep], cols_t[~keep], num_rows, num_g)
    srt = _sort_rows(dist)
    # Sorting puts NaN last, so the two ends of each sorted row reveal any non-finite distance.
    if not bool(torch.isfinite(srt[:, [0, -1]]).all()):
        raise InputError("distances must be finite; found NaN or inf")
    closer = torch.searchsorted(srt, pos.values)
    tied = (torch.searchsorted(srt, pos.values, right=True) - closer > 1) & (pos.cols < num_g)
    ranks = closer - torch.searchsorted(drop.values.sort(dim=1).values, pos.values)
    if ties == "stable" and bool(tied.any()):
        ranks += _tied_before(dist, pos, drop, tied)
    ranks = torch.where(pos.cols == num_g, num_g, ranks).sort(dim=1).values.cpu().numpy()
    counts = np.bincount(rows[~dropped], minlength=num_rows)
    if ties == "argsort":
        for r in torch.nonzero(tied.any(dim=1)).flatten().tolist():
            ranks[r, : counts[r]] = _argsort_ranks(dist[r].cpu().numpy(), index, q_pids[r], q_camids[r])
    return counts, ranks


class RankAccumulator:
    """Collects per-query AP, INP and first-hit rank over chunks; ``result()`` gives the metrics."""

    def __init__(self, max_rank: int) -> None:
        self.max_rank = max_rank
        self._ap: list[np.ndarray] = []
        self._inp: list[np.ndarray] = []
        self._first: list[np.ndarray] = []

    def add(self, counts: np.ndarray, ranks: np.ndarray) -> None:
        """Add one chunk from :func:`positive_ranks`; queries without a kept true match are skipped."""
        valid = counts > 0
        counts, ranks = counts[valid], ranks[valid]
        ordinal = np.arange(1, ranks.shape[1] + 1)
        # Precision at each true match (torchreid's terms), summed left to right: padding adds exact
        # zeros, so the result does not depend on how wide the chunk happens to be.
        terms = np.where(ordinal <= counts[:, None], ordinal / (ranks + 1.0), 0.0)
        self._ap.append(np.cumsum(terms, axis=1)[:, -1] / counts)
        self._inp.append(counts / (ranks[np.arange(len(counts)), counts - 1] + 1.0))
        self._first.append(ranks[:, 0])

    def result(self) -> dict:
        """dict(cmc, mAP, mINP, num_valid_queries); raises InputError when no query was valid."""
        first = np.concatenate(self._first) if self._first else np.zeros(0, dtype=np.int64)
        num_valid = len(first)
        if num_valid == 0:
            raise InputError("no query has a true match in the gallery outside its own camera")
        hits = np.bincount(np.minimum(first, self.max_rank), minlength=self.max_rank + 1)[: self.max_rank]
        cmc = np.cumsum(hits).astype(np.float32) / np.float32(num_valid)
        return {
            "cmc": cmc,
            "mAP": float(np.mean(np.concatenate(self._ap))),
            "mINP": float(np.mean(np.concatenate(self._inp))),
            "num_valid_queries": num_valid,
        }
