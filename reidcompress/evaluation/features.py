"""Feature extraction over a dataset split, and model evaluation on query/gallery."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reidcompress.data.datasets import ImageItem, ReIDDataset, load_dataset
from reidcompress.data.loader import build_eval_loader
from reidcompress.errors import DatasetError
from reidcompress.evaluation.cache import FeatureCache
from reidcompress.evaluation.distance import compute_distance
from reidcompress.evaluation.rank import evaluate_features, rank_metrics
from reidcompress.evaluation.rerank import re_ranking
from reidcompress.runtime.base import Embedder, load_embedder

# Progress goes to stderr: stdout carries a command's --json result.
_STDERR = Console(stderr=True)

__all__ = ["extract_features", "evaluate_embedder", "evaluate_model", "summarise_metrics"]


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=disable or not _STDERR.is_terminal,
        transient=True,
        console=_STDERR,
    )


def extract_features(
    embedder: Embedder,
    items: Sequence[ImageItem],
    *,
    batch_size: int = 64,
    flip: bool = False,
    num_workers: int = 0,
    description: str = "features",
    progress: bool = True,
) -> np.ndarray:
    """Embeddings (N, D) float32 for ``items``, in order; ``flip`` averages with the mirrored image."""
    if not items:
        raise DatasetError(f"no images to extract {description} from")
    loader = build_eval_loader(items, embedder.input_size, batch_size=batch_size, num_workers=num_workers)
    chunks = []
    with _progress(not progress) as bar:
        task = bar.add_task(description, total=len(items))
        for images, *_ in loader:
            batch = images.numpy()
            feats = embedder.embed(batch)
            if flip:
                feats = (feats + embedder.embed(np.ascontiguousarray(batch[..., ::-1]))) / 2
            chunks.append(np.asarray(feats, dtype=np.float32))
            bar.advance(task, len(batch))
    return np.concatenate(chunks)


def _split_features(
    embedder: Embedder, items: Sequence[ImageItem], split: str, cache: FeatureCache | None, **kw: Any
) -> np.ndarray:
    if cache is None:
        return extract_features(embedder, items, description=split, **kw)
    return cache.get_or_compute(
        embedder, items, lambda: extract_features(embedder, items, description=split, **kw), flip=bool(kw.get("flip"))
    )


def summarise_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """rank-1/5/10, mAP and mINP in percent from ``evaluate_features`` output."""
    cmc = np.asarray(metrics["cmc"])
    out = {f"rank{k}": float(cmc[min(k, len(cmc)) - 1] * 100) for k in (1, 5, 10)}
    out.update(mAP=float(metrics["mAP"] * 100), mINP=float(metrics["mINP"] * 100))
    return out


def evaluate_embedder(
    embedder: Embedder,
    dataset: ReIDDataset,
    *,
    metric: str = "euclidean",
    flip: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    rerank: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Rank-1/5/10, mAP and mINP (percent) of ``embedder`` on ``dataset``'s query/gallery.

    With ``rerank``, the k-reciprocal re-ranked numbers are added under ``"rerank"``.
    """
    kw = dict(batch_size=batch_size, flip=flip, num_workers=num_workers, progress=progress)
    qf = _split_features(embedder, dataset.query, "query", cache, **kw)
    gf = _split_features(embedder, dataset.gallery, "gallery", cache, **kw)
    ids = _ids(dataset)
    result: dict[str, Any] = summarise_metrics(
        evaluate_features(qf, gf, *ids, metric=metric, max_rank=min(50, len(gf)))
    )
    if rerank:
        dist = re_ranking(
            compute_distance(qf, gf, metric), compute_distance(qf, qf, metric), compute_distance(gf, gf, metric)
        )
        result["rerank"] = summarise_metrics(rank_metrics(dist, *ids, max_rank=min(50, len(gf))))
    return result


def _ids(dataset: ReIDDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    q, g = dataset.query, dataset.gallery
    return (
        np.array([i.pid for i in q]),
        np.array([i.pid for i in g]),
        np.array([i.camid for i in q]),
        np.array([i.camid for i in g]),
    )


def evaluate_model(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    dataset: str = "market1501",
    device: str = "cpu",
    use_cache: bool = True,
    **kw: Any,
) -> dict[str, float]:
    """Evaluate a model file (any backend) on a dataset folder."""
    ds = load_dataset(data, dataset)
    with load_embedder(model, device=device) as emb:
        return evaluate_embedder(emb, ds, cache=FeatureCache.default() if use_cache else None, **kw)
