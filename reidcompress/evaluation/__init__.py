"""Pure-numeric ReID evaluation: distances, Market-1501 CMC/mAP/mINP, k-reciprocal re-ranking."""

from __future__ import annotations

from reidcompress.evaluation.distance import compute_distance, iter_distance_rows, list_metrics
from reidcompress.evaluation.rank import evaluate_features, evaluate_rank, rank_metrics
from reidcompress.evaluation.rerank import re_ranking

__all__ = [
    "compute_distance",
    "evaluate_features",
    "evaluate_rank",
    "iter_distance_rows",
    "list_metrics",
    "rank_metrics",
    "re_ranking",
]
