"""The one timing code of the project: ``verify``, ``bench`` and latency-target pruning all use it.

Warm up, then time many runs with ``perf_counter`` (CUDA synchronised before each clock read), and
report median and spread: p50/p95/p99, mean, std and images per second.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reidcompress.errors import InputError
from reidcompress.runtime.base import Embedder

__all__ = [
    "LatencyStats",
    "RatioStats",
    "MEASURE_SPINNING",
    "measure",
    "measure_interleaved",
    "embedder_latency",
    "compare_latency",
    "latency_ratio",
]

Clock = Callable[[], float]
# How models are opened for timing (``load_embedder(..., spinning=MEASURE_SPINNING)``): ONNX Runtime
# workers that spin-wait after a run take the cores from the next model timed in turn.
MEASURE_SPINNING = False


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.p50_ms / 1e3) if self.p50_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}

    @classmethod
    def from_times(cls, batch: int, seconds: list[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(
            batch, len(ms), float(p50), float(p95), float(p99), float(ms.mean()), float(ms.std()), float(ms.min())
        )


@dataclass(frozen=True)
class RatioStats:
    """A model's latency relative to a reference model timed in the same interleaved loop.

    Attributes:
        ratio: median over the rounds of (model's time / reference's time in that round); a load
            change between rounds cancels out of each round's ratio.
        spread: half the interquartile range of the per-round ratios, relative to ``ratio``: how far
            one round's ratio typically strays, i.e. the machine's run-to-run noise on this comparison.
        rounds: rounds timed.
        model, reference: each one's own statistics over the same rounds.
    """

    ratio: float
    spread: float
    rounds: int
    model: LatencyStats
    reference: LatencyStats

    @classmethod
    def from_rounds(cls, batch: int, model: list[float], reference: list[float]) -> RatioStats:
        ratios = np.asarray(model, dtype=np.float64) / np.asarray(reference, dtype=np.float64)
        q25, med, q75 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
        return cls(
            med,
            (q75 - q25) / 2 / med,
            len(ratios),
            LatencyStats.from_times(batch, model),
            LatencyStats.from_times(batch, reference),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "spread": self.spread,
            "rounds": self.rounds,
            "p50_ms": self.model.p50_ms,
            "reference_p50_ms": self.reference.p50_ms,
        }


def measure(
    fn: Callable[[], Any],
    *,
    batch: int,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 30.0,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> LatencyStats:
    """Time ``fn`` ``runs`` times after ``warmup`` calls; stop early (>= 3 runs) past ``max_seconds``."""
    return measure_interleaved(
        {"fn": fn}, batch=batch, warmup=warmup, runs=runs, max_seconds=max_seconds, clock=clock, syncs={"fn": sync}
    )["fn"]


def _cuda_sync(embedder: Embedder) -> Callable[[], None] | None:
    if embedder.backend == "torch" and str(embedder.device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None  # ONNX Runtime and TensorRT calls here return host arrays: already synchronised


def embedder_latency(
    embedder: Embedder,
    batch: int,
    *,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 30.0,
    clock: Clock = time.perf_counter,
    seed: int = 0,
) -> LatencyStats:
    """Latency of ``embedder.embed`` on a batch of random images at the model's input size."""
    return compare_latency(
        {"model": embedder}, batch, warmup=warmup, runs=runs, max_seconds=max_seconds, clock=clock, seed=seed
    )["model"]


def measure_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    batch: int,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 60.0,
    clock: Clock = time.perf_counter,
    syncs: dict[str, Callable[[], None] | None] | None = None,
) -> dict[str, LatencyStats]:
    """Time several functions in round-robin, so load from elsewhere on the machine hits all alike.

    Comparisons (pruned vs unpruned, ONNX vs PyTorch) stay fair on a shared machine where a
    sequential measurement would credit one model with another's quiet minute.
    """
    times = _timed_rounds(fns, warmup=warmup, runs=runs, max_seconds=max_seconds, clock=clock, syncs=syncs)
    return {name: LatencyStats.from_times(batch, t) for name, t in times.items()}


def _timed_rounds(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int,
    runs: int,
    max_seconds: float,
    clock: Clock,
    syncs: dict[str, Callable[[], None] | None] | None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, round by round (index i of every list is the same round)."""
    if runs < 1 or warmup < 0:
        raise InputError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    syncs = syncs or {}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for sync in syncs.values():
        if sync is not None:
            sync()  # queued warm-up work must not land in the first timed run
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = clock()
    for i in range(runs):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            if sync := syncs.get(name):
                sync()
            times[name].append(clock() - t0)
        if i >= 2 and clock() - start > max_seconds:
            break
    return times


def compare_latency(
    embedders: dict[str, Embedder],
    batch: int,
    *,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 60.0,
    clock: Clock = time.perf_counter,
    seed: int = 0,
) -> dict[str, LatencyStats]:
    """``embedder_latency`` for several models at once, interleaved (their input sizes may differ)."""
    fns, syncs = _embed_calls(embedders, batch, seed)
    return measure_interleaved(
        fns, batch=batch, warmup=warmup, runs=runs, max_seconds=max_seconds, clock=clock, syncs=syncs
    )


def latency_ratio(
    model: Embedder,
    reference: Embedder,
    batch: int,
    *,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 120.0,
    clock: Clock = time.perf_counter,
    seed: int = 0,
) -> RatioStats:
    """``model``'s latency as a ratio to ``reference``'s, the two alternating in one timing loop."""
    fns, syncs = _embed_calls({"model": model, "reference": reference}, batch, seed)
    times = _timed_rounds(fns, warmup=warmup, runs=runs, max_seconds=max_seconds, clock=clock, syncs=syncs)
    return RatioStats.from_rounds(batch, times["model"], times["reference"])


def _embed_calls(
    embedders: dict[str, Embedder], batch: int, seed: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], None] | None]]:
    """Each embedder's call on a random batch at its own input size, and its synchronisation."""
    rng = np.random.default_rng(seed)
    fns: dict[str, Callable[[], Any]] = {}
    syncs: dict[str, Callable[[], None] | None] = {}
    for name, emb in embedders.items():
        x = rng.random((batch, 3, *emb.input_size), dtype=np.float32)
        fns[name] = functools.partial(emb.embed, x)
        syncs[name] = _cuda_sync(emb)
    return fns, syncs
