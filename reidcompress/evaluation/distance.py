"""Query-gallery distance matrices, computed the way torchreid's ``compute_distance_matrix`` does.

``euclidean`` is the *squared* euclidean distance ``|q|^2 + |g|^2 - 2 q.g`` (torchreid's
``euclidean_squared_distance``; the square root changes no ranking) and ``cosine`` is ``1 - cos``
(torchreid's ``cosine_distance``, up to rounding).

Float GEMM results depend on the shape of the product (the BLAS picks kernels and blockings by
shape), so slicing the queries differently would change the last bits of the distances. Every
distance here is therefore computed in query blocks of one fixed row count per problem; the full
matrix and any chunked iteration over it hold bit-identical numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from reidcompress.errors import InputError

__all__ = ["compute_distance", "iter_distance_rows", "list_metrics"]

# Rows per GEMM: large enough to run near peak throughput, small enough to keep a block cheap.
BLOCK_ROWS = 256
_NORM_ROWS = 4096
_NORM_EPS = 1e-12  # F.normalize's default

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _row_norms(gf: torch.Tensor, squared: bool) -> torch.Tensor:
    """Per-row (squared) L2 norms, a slab at a time so no gallery-sized temporary is made."""
    out = gf.new_empty(gf.shape[0])
    for i in range(0, gf.shape[0], _NORM_ROWS):
        sq = gf[i : i + _NORM_ROWS].pow(2).sum(dim=1)
        out[i : i + _NORM_ROWS] = sq if squared else sq.sqrt_()
    return out


def _euclidean_gallery(gf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return gf, _row_norms(gf, squared=True)


def _euclidean_block(qb: torch.Tensor, gallery: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    gf, g_sq = gallery
    torch.add(qb.pow(2).sum(dim=1, keepdim=True), g_sq[None, :], out=out)
    return out.addmm_(qb, gf.t(), beta=1, alpha=-2)


def _cosine_gallery(gf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Dividing the products by the gallery norms, instead of normalising a copy of the gallery as
    # torchreid does, saves a gallery-sized buffer (670 MB at MSMT17 size) for a last-bit difference.
    return gf, _row_norms(gf, squared=False).clamp_min_(_NORM_EPS)


def _cosine_block(qb: torch.Tensor, gallery: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    gf, g_norm = gallery
    torch.mm(F.normalize(qb, p=2, dim=1, eps=_NORM_EPS), gf.t(), out=out).div_(g_norm[None, :])
    return out.neg_().add_(1.0)  # rounds as 1 - cos does, without a second buffer


# name -> (prepare the gallery once, write the distances of one query block to ``out``)
_BlockFn = Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor]
_METRICS: dict[str, tuple[Callable[[torch.Tensor], tuple], _BlockFn]] = {
    "euclidean": (_euclidean_gallery, _euclidean_block),
    "cosine": (_cosine_gallery, _cosine_block),
}


def list_metrics() -> list[str]:
    """Names accepted by ``metric``."""
    return sorted(_METRICS)


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise InputError(f"unknown distance metric {metric!r}; valid: {', '.join(list_metrics())}")


def as_feature_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """A 2-D floating tensor sharing memory with ``x`` where possible (float16 is promoted to float32)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise InputError(f"{name} must be 2-D (num_items, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{name} must hold floating-point features, got {t.dtype}")
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _check_features(qf: torch.Tensor, gf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if qf.shape[1] != gf.shape[1]:
        raise InputError(f"query and gallery features differ in dimension: {qf.shape[1]} vs {gf.shape[1]}")
    if qf.device != gf.device:
        raise InputError(f"query and gallery features are on different devices: {qf.device} vs {gf.device}")
    if qf.shape[0] == 0 or gf.shape[0] == 0:
        raise InputError("query and gallery must each hold at least one feature")
    dtype = torch.promote_types(qf.dtype, gf.dtype)
    return qf.to(dtype), gf.to(dtype)


def iter_distance_rows(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    metric: str = "euclidean",
    chunk_rows: int = BLOCK_ROWS,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_query_row, distances)`` for consecutive chunks of ``chunk_rows`` query rows.

    Distances are tensors on the features' device. Concatenated they equal
    ``compute_distance(qf, gf, metric)`` bit for bit, whatever ``chunk_rows`` is. Peak extra memory is
    about ``(chunk_rows + BLOCK_ROWS) x num_gallery`` distances.
    """
    return distance_chunks(qf, gf, metric, chunk_rows, reuse=False)


def distance_chunks(
    qf: np.ndarray | torch.Tensor, gf: np.ndarray | torch.Tensor, metric: str, chunk_rows: int, reuse: bool
) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`iter_distance_rows`; with ``reuse`` every block is written to one buffer, so a yielded
    tensor is only valid until the next step (saves a fresh allocation, and its page faults, per block)."""
    _check_metric(metric)
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
    qf, gf = _check_features(as_feature_tensor(qf, "qf"), as_feature_tensor(gf, "gf"))
    return _generate_rows(qf, gf, metric, chunk_rows, reuse)


def _generate_rows(
    qf: torch.Tensor, gf: torch.Tensor, metric: str, chunk_rows: int, reuse: bool
) -> Iterator[tuple[int, torch.Tensor]]:
    prepare, block_fn = _METRICS[metric]
    with torch.no_grad():
        gallery = prepare(gf)
        block = min(BLOCK_ROWS, qf.shape[0])
        buffer = None
        pieces: list[torch.Tensor] = []
        filled = start = 0
        for b0 in range(0, qf.shape[0], block):
            rows = qf[b0 : b0 + block]
            if rows.shape[0] < block:  # pad so that every GEMM has the same shape
                rows = torch.cat([rows, rows.new_zeros(block - rows.shape[0], rows.shape[1])])
            if buffer is None or not reuse:
                buffer = gf.new_empty(block, gf.shape[0])
            dist = block_fn(rows.contiguous(), gallery, buffer)[: min(block, qf.shape[0] - b0)]
            while dist.shape[0]:
                take = min(chunk_rows - filled, dist.shape[0])
                pieces.append(dist[:take])
                dist, filled = dist[take:], filled + take
                if filled == chunk_rows:
                    yield start, pieces[0] if len(pieces) == 1 else torch.cat(pieces)
                    pieces, start, filled = [], start + filled, 0
            if reuse and pieces:  # a chunk left pending must not see the buffer overwritten
                pieces = [torch.cat(pieces)]
        if pieces:
            yield start, pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def compute_distance(qf: ArrayT, gf: ArrayT, metric: str = "euclidean") -> ArrayT:
    """Query-gallery distance matrix, shape (num_query, num_gallery).

    Args:
        qf: Query features (Q, D), numpy array or torch tensor (any device).
        gf: Gallery features (G, D), same kind as ``qf``.
        metric: ``"euclidean"`` (squared, as torchreid) or ``"cosine"`` (``1 - cos``).

    Returns:
        A numpy array for numpy input, else a tensor on the features' device; float32 unless a
        feature array is float64.

    Raises:
        InputError: unknown metric, shapes that do not fit, non-float features.
    """
    out: torch.Tensor | None = None
    for start, dist in iter_distance_rows(qf, gf, metric):
        if out is None:
            out = dist.new_empty(as_feature_tensor(qf, "qf").shape[0], dist.shape[1])
        out[start : start + dist.shape[0]] = dist
    assert out is not None  # iter_distance_rows yields at least once or raises
    return out if isinstance(qf, torch.Tensor) else out.cpu().numpy()
