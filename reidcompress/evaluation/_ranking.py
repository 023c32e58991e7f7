"""The Market-1501 ranking protocol on chunks of query rows, shared by every evaluation entry point.

Per query the protocol ranks the gallery by distance, drops the items that have the query's pid AND
camera, and looks at where the remaining true matches land. The metrics need nothing but the 0-based
rank of each remaining true match among the remaining items, and when a match's distance is unique
in its row that rank is

    #{gallery items closer than the match} - #{dropped items closer than the match}.

So a chunk needs one value sort per row (several times cheaper than an argsort, and split over the
cores) and binary searches. Only a true match whose distance is tied with another kept item needs
more, and the order of tied items is a choice: ``"argsort"`` re-ranks such rows with ``np.argsort``,
the call torchreid makes, so tie order and every number are torchreid's; ``"stable"`` puts tied
items in gallery order (as ``np.argsort(kind="stable")``), counted by scanning the tied rows only.
Float32 distances tie more often than one would think (8% of the rows of a random Market-1501-size
problem, most rows at MSMT17 size), which makes ``"stable"`` the cheaper rule.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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

_MIN_ITEMS_PER_THREAD = 8  # rows (or re-ranked rows) below which a thread is not worth starting


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


def _run_split(fn: Callable[[slice], None], num_items: int) -> None:
    """Call ``fn`` on contiguous slices of ``range(num_items)``, one per torch thread.

    Numpy releases the GIL while it sorts, so sorting row slices in threads uses every core.
    """
    workers = max(1, min(torch.get_num_threads(), num_items // _MIN_ITEMS_PER_THREAD))
    if workers == 1:
        fn(slice(0, num_items))
        return
    bounds = np.linspace(0, num_items, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]))


def _sort_rows(dist: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Every row of ``dist`` sorted, written to ``out`` (reusing one buffer saves page faults)."""
    if out is None or out.shape[1] != dist.shape[1] or out.shape[0] < dist.shape[0] or out.dtype != dist.dtype:
        out = np.empty(dist.shape, dtype=dist.dtype)
    out = out[: dist.shape[0]]

    def sort_slice(rows: slice) -> None:
        out[rows] = dist[rows]
        out[rows].sort(axis=1)

    _run_split(sort_slice, dist.shape[0])
    return out


def _count_below(srt: np.ndarray, rows: np.ndarray, values: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """Per (row, value): entries of the row-sorted ``srt[row]`` below (or, inclusive, up to) ``value``.

    A binary search run for all pairs at once (``np.searchsorted`` takes one sorted array only).
    """
    width = srt.shape[1]
    flat = srt.reshape(-1)
    lo = rows * width
    hi = lo + width
    for _ in range(width.bit_length()):
        mid = (lo + hi) >> 1
        probe = flat[np.minimum(mid, flat.size - 1)]
        right = ((probe <= values) if inclusive else (probe < values)) & (lo < hi)
        lo, hi = np.where(right, mid + 1, lo), np.where(right, hi, mid)
    return lo - rows * width


def _pad_sorted(
    rows: np.ndarray, values: np.ndarray, cols: np.ndarray, num_rows: int, num_g: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-row (value, column) lists as (num_rows, widest) matrices sorted by value, padded (+inf, G)."""
    counts = np.bincount(rows, minlength=num_rows)
    slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    shape = (num_rows, max(int(counts.max(initial=0)), 1))
    out_v, out_c = np.full(shape, np.inf, dtype=values.dtype), np.full(shape, num_g)
    out_v[rows, slot], out_c[rows, slot] = values, cols
    order = np.argsort(out_v, axis=1, kind="stable")
    return np.take_along_axis(out_v, order, axis=1), np.take_along_axis(out_c, order, axis=1)


def _kept_ties(
    srt: np.ndarray,
    drop_v: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
    less: np.ndarray,
    drop_less: np.ndarray,
) -> np.ndarray:
    """Which true matches share their distance with a kept item other than themselves.

    ``srt[row, less]`` is the first entry equal to the match's distance, so only where the entry
    after it is equal too can there be a tie; the exact count, dropped items discounted, is computed
    for those few candidates.
    """
    num_g = srt.shape[1]
    nxt = np.minimum(less + 1, num_g - 1)
    tied = (less + 1 < num_g) & (srt[rows, nxt] == values)
    cand = np.flatnonzero(tied)
    if len(cand):
        r, v = rows[cand], values[cand]
        equal = _count_below(srt, r, v, inclusive=True) - less[cand]
        equal_dropped = _count_below(drop_v, r, v, inclusive=True) - drop_less[cand]
        tied[cand] = equal - equal_dropped > 1
    return tied


def _argsort_ranks(row: np.ndarray, index: GalleryIndex, pid: int, camid: int) -> np.ndarray:
    """Ranks of the kept true matches in one row, ordered exactly as torchreid orders them."""
    order = np.argsort(row)
    match = index.g_pids[order] == pid
    keep = ~(match & (index.g_camids[order] == camid))
    return np.flatnonzero(match[keep])


def _tied_before(
    dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, drop: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Per tied true match: kept items at the same distance with a smaller gallery index."""
    drop_v, drop_c = drop
    before = np.count_nonzero((drop_v[rows] == values[:, None]) & (drop_c[rows] < cols[:, None]), axis=1)
    before = -before.astype(np.int64)

    def count(part: slice) -> None:
        # One prefix scan per tie: ties are a few per row, and a scan is cheaper than a sort.
        for i in range(part.start, part.stop):
            before[i] += np.count_nonzero(dist[rows[i], : cols[i]] == values[i])

    _run_split(count, len(rows))
    return before


def positive_ranks(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    index: GalleryIndex,
    ties: str = "argsort",
    buffer: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of every kept true match of every query in a chunk of distance rows.

    Args:
        dist: (C, G) float distances.
        q_pids, q_camids: labels of the C queries.
        index: the gallery's labels.
        ties: order of items at equal distance: ``"argsort"`` as ``np.argsort`` (torchreid's
            order; re-sorts each row where a true match ties with a kept item), ``"stable"`` by
            gallery index.
        buffer: scratch space for the sorted rows, reused across chunks when large enough.

    Returns:
        ``counts`` (C,) kept true matches per query, and ``ranks`` (C, W) int64: row i holds its
        ``counts[i]`` 0-based ranks among the kept items, ascending, then padding.
    """
    num_rows, num_g = dist.shape
    srt = _sort_rows(dist, out=buffer)
    # Sorting puts NaN last, so the two ends of each sorted row reveal any non-finite distance.
    if not np.isfinite(srt[:, [0, -1]]).all():
        raise InputError("distances must be finite; found NaN or inf")
    rows, cols, dropped = index.matches(q_pids, q_camids)
    values = dist[rows, cols]
    drop = _pad_sorted(rows[dropped], values[dropped], cols[dropped], num_rows, num_g)
    rows, cols, values = rows[~dropped], cols[~dropped], values[~dropped]
    less, drop_less = _count_below(srt, rows, values), _count_below(drop[0], rows, values)
    ranks = less - drop_less
    tied = _kept_ties(srt, drop[0], rows, values, less, drop_less)
    if ties == "stable" and tied.any():
        ranks[tied] += _tied_before(dist, rows[tied], cols[tied], values[tied], drop)
    counts = np.bincount(rows, minlength=num_rows)
    out = np.full((num_rows, max(int(counts.max(initial=0)), 1)), num_g, dtype=np.int64)
    out[rows, np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]] = ranks
    out.sort(axis=1)
    if ties == "argsort" and tied.any():
        redo = np.unique(rows[tied])

        def rerank(part: slice) -> None:
            for r in redo[part]:
                out[r, : counts[r]] = _argsort_ranks(dist[r], index, q_pids[r], q_camids[r])

        _run_split(rerank, len(redo))
    return counts, out


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
