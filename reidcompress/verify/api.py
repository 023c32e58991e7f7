"""``verify``: accuracy, output parity and latency of candidates against a reference, with tolerances.

A release gate: the result says which checks broke, and the CLI exits 1 when any did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import file_sha256
from reidcompress.data.datasets import ReIDDataset, load_dataset
from reidcompress.errors import InputError
from reidcompress.evaluation.cache import FeatureCache
from reidcompress.evaluation.features import evaluate_embedder
from reidcompress.export.calibration import image_batches, sample_items
from reidcompress.export.parity import compare_embeddings, embed_all
from reidcompress.models.summary import Complexity, complexity
from reidcompress.runtime.base import Embedder, load_embedder
from reidcompress.verify.environment import environment
from reidcompress.verify.latency import MEASURE_SPINNING, compare_latency

__all__ = ["Tolerances", "Check", "ModelReport", "VerifyResult", "verify", "network_id", "embedder_complexity"]


@dataclass(frozen=True)
class Tolerances:
    """Release criteria. Default: rank-1 may drop at most 1 point (the survey's "within 1%")."""

    max_rank1_drop: float = 1.0
    max_map_drop: float | None = None
    min_cosine: float | None = None

    def __post_init__(self) -> None:
        if self.max_rank1_drop < 0 or (self.max_map_drop is not None and self.max_map_drop < 0):
            raise InputError("accuracy drop tolerances must be >= 0 points")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise InputError(f"`min_cosine` must be in [-1, 1], got {self.min_cosine}")


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool


@dataclass
class ModelReport:
    path: str
    role: str
    runtime: dict[str, Any]
    network: str | None
    flops: int | None
    params: int | None
    metrics: dict[str, Any]
    drops: dict[str, float] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class VerifyResult:
    dataset: str
    reference: ModelReport
    candidates: list[ModelReport]
    tolerances: Tolerances
    environment: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "dataset": self.dataset,
            "tolerances": asdict(self.tolerances),
            "reference": _model_dict(self.reference),
            "candidates": [_model_dict(c) for c in self.candidates],
            "environment": self.environment,
        }


def _model_dict(m: ModelReport) -> dict[str, Any]:
    return {**asdict(m), "passed": m.passed}


def network_id(embedder: Embedder) -> str | None:
    """The sha256 of the checkpoint a model was made from: equal ids mean the same network."""
    meta = getattr(embedder, "metadata", {}) or {}
    if meta.get("source_sha256"):
        return str(meta["source_sha256"])
    src = getattr(embedder, "source_path", None)
    if embedder.backend == "torch" and src is not None:
        return file_sha256(src)
    return None


def embedder_complexity(embedder: Embedder) -> Complexity | None:
    """The network's FLOPs and parameters: recorded in an exported model's metadata, counted on a PyTorch
    one; None for an engine that records neither."""
    meta = getattr(embedder, "metadata", {}) or {}
    if "flops" in meta and "params" in meta:
        return Complexity(int(meta["flops"]), int(meta["params"]), embedder.input_size)
    model = getattr(embedder, "model", None)
    return None if model is None else complexity(model)


def _checks(drops: dict[str, float], parity: dict[str, Any] | None, tol: Tolerances) -> list[Check]:
    checks = [Check("rank-1 drop (points)", drops["rank1"], tol.max_rank1_drop, drops["rank1"] <= tol.max_rank1_drop)]
    if tol.max_map_drop is not None:
        checks.append(Check("mAP drop (points)", drops["mAP"], tol.max_map_drop, drops["mAP"] <= tol.max_map_drop))
    if tol.min_cosine is not None and parity is not None:
        checks.append(
            Check(
                "min cosine to reference", parity["min_cosine"], tol.min_cosine, parity["min_cosine"] >= tol.min_cosine
            )
        )
    return checks


@dataclass
class _Settings:
    dataset: ReIDDataset
    cache: FeatureCache | None
    device: str
    threads: int | None
    latency_batches: Sequence[int]
    latency_runs: int
    parity_images: np.ndarray
    eval_kw: dict[str, Any]


def _report(path: Path, role: str, s: _Settings) -> tuple[ModelReport, Embedder]:
    emb = load_embedder(path, device=s.device, threads=s.threads)
    metrics = evaluate_embedder(emb, s.dataset, cache=s.cache, **s.eval_kw)
    cost = embedder_complexity(emb)
    flops, params = (cost.flops, cost.params) if cost else (None, None)
    return ModelReport(str(path), role, emb.describe(), network_id(emb), flops, params, metrics), emb


def _latencies(reports: list[ModelReport], s: _Settings) -> None:
    """Time every model together, interleaved, so a busy machine cannot favour one of them."""
    embedders = {
        str(i): load_embedder(r.path, device=s.device, threads=s.threads, spinning=MEASURE_SPINNING)
        for i, r in enumerate(reports)
    }
    try:
        for b in s.latency_batches:
            stats = compare_latency(embedders, b, runs=s.latency_runs)
            for i, r in enumerate(reports):
                r.latency[str(b)] = stats[str(i)].to_dict()
    finally:
        for emb in embedders.values():
            emb.close()


def verify(
    reference: str | os.PathLike[str],
    candidates: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str],
    *,
    dataset: str = "market1501",
    tolerances: Tolerances | None = None,
    device: str = "cpu",
    threads: int | None = None,
    latency_batches: Sequence[int] = (1, 16),
    latency_runs: int = 30,
    parity_images: int = 64,
    use_cache: bool = True,
    metric: str = "euclidean",
    rerank: bool = False,
    progress: bool = True,
) -> VerifyResult:
    """Evaluate the reference and every candidate on ``data``, compare, and apply ``tolerances``."""
    if not candidates:
        raise InputError("give at least one candidate model")
    if any(b < 1 for b in latency_batches):
        raise InputError(f"latency batch sizes must be >= 1, got {list(latency_batches)}")
    tol = tolerances or Tolerances()
    ds = load_dataset(data, dataset)
    s = _Settings(
        ds,
        FeatureCache.default() if use_cache else None,
        device,
        threads,
        latency_batches,
        latency_runs,
        np.empty(0),
        {"metric": metric, "rerank": rerank, "progress": progress},
    )
    ref, ref_emb = _report(Path(reference), "reference", s)
    items = sample_items(ds.query, parity_images)
    s.parity_images = np.concatenate(list(image_batches(items, ref_emb.input_size, 32)))
    ref_feats = embed_all(ref_emb, s.parity_images)
    ref_emb.close()
    reports = [_candidate(Path(c), ref, ref_feats, s, tol) for c in candidates]
    _latencies([ref, *reports], s)
    return VerifyResult(ds.name, ref, reports, tol, environment(device, threads))


def _candidate(path: Path, ref: ModelReport, ref_feats: np.ndarray, s: _Settings, tol: Tolerances) -> ModelReport:
    rep, emb = _report(path, "candidate", s)
    with emb:
        rep.drops = {k: ref.metrics[k] - rep.metrics[k] for k in ("rank1", "rank5", "mAP")}
        if rep.network is not None and rep.network == ref.network:
            if tuple(emb.input_size) != tuple(s.parity_images.shape[2:]):
                raise InputError(f"{path}: input size {emb.input_size} differs from the reference's")
            rep.parity = compare_embeddings(ref_feats, embed_all(emb, s.parity_images)).to_dict()
            for k in ("passed", "min_cosine_required"):
                rep.parity.pop(k)
        rep.checks = _checks(rep.drops, rep.parity, tol)
    return rep
