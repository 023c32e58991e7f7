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
    "MEASURE_SPINNING",
    "measure",
    "measure_interleaved",
    "embedder_latency",
    "compare_latency",
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
    return {name: LatencyStats.from_times(batch, t) for name, t in times.items()}


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
    rng = np.random.default_rng(seed)
    fns: dict[str, Callable[[], Any]] = {}
    syncs: dict[str, Callable[[], None] | None] = {}
    for name, emb in embedders.items():
        x = rng.random((batch, 3, *emb.input_size), dtype=np.float32)
        fns[name] = functools.partial(emb.embed, x)
        syncs[name] = _cuda_sync(emb)
    return measure_interleaved(
        fns, batch=batch, warmup=warmup, runs=runs, max_seconds=max_seconds, clock=clock, syncs=syncs
    )
