"""``bench``: latency and throughput per model and batch size, with FLOPs and params beside."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidcompress._io import save_figure
from reidcompress.errors import InputError
from reidcompress.runtime.base import load_embedder
from reidcompress.runtime.torch_backend import TORCH_SUFFIXES
from reidcompress.verify.api import embedder_complexity
from reidcompress.verify.environment import environment
from reidcompress.verify.latency import MEASURE_SPINNING, compare_latency

__all__ = ["bench", "plot_bench"]


def bench(
    models: Sequence[str | os.PathLike[str]],
    batch_sizes: Sequence[int] = (1, 8, 32),
    *,
    device: str = "cpu",
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 30.0,
    fp16: bool = False,
) -> dict[str, Any]:
    """Time every model at each batch size; ``fp16`` adds an fp16 run of each PyTorch checkpoint (CUDA)."""
    if not models:
        raise InputError("give at least one model to benchmark")
    if not batch_sizes or min(batch_sizes) < 1:
        raise InputError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    embedders, sources = {}, {}
    try:
        for path in models:
            embedders[str(path)] = load_embedder(path, device=device, threads=threads, spinning=MEASURE_SPINNING)
            sources[str(path)] = str(path)
            if fp16 and Path(path).suffix.lower() in TORCH_SUFFIXES:
                embedders[f"{path} fp16"] = load_embedder(path, device=device, fp16=True)
                sources[f"{path} fp16"] = str(path)
        # All models timed together, interleaved, so a busy moment on the machine cannot favour one.
        stats = {
            b: compare_latency(embedders, b, warmup=warmup, runs=runs, max_seconds=max_seconds) for b in batch_sizes
        }
        rows = []
        for name, emb in embedders.items():
            cost = embedder_complexity(emb)
            sizes = {"flops": cost.flops if cost else None, "params": cost.params if cost else None}
            rows += [
                {"model": sources[name], **emb.describe(), **sizes, **stats[b][name].to_dict()} for b in batch_sizes
            ]
    finally:
        for emb in embedders.values():
            emb.close()
    return {"results": rows, "environment": environment(device, threads)}


def _verify_points(reports: Sequence[str | os.PathLike[str]]) -> list[tuple[str, float, float]]:
    from reidcompress.verify.report import model_rows

    points = []
    for rep in reports:
        try:
            result = json.loads(Path(rep).read_text())
            rows = model_rows(result)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{rep}: not a verify report ({e})") from None
        points += [(r["model"], r["p50_b1_ms"], r["rank1"]) for r in rows if r["p50_b1_ms"] is not None]
    return points


def plot_bench(
    result: dict[str, Any], out: str | os.PathLike[str], reports: Sequence[str | os.PathLike[str]] = ()
) -> Path:
    """Latency vs batch size per model; with verify reports, also rank-1 vs batch-1 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _verify_points(reports)
    fig, axes = plt.subplots(1, 2 if points else 1, figsize=(11 if points else 6, 4), squeeze=False)
    ax = axes[0][0]
    for model, precision in dict.fromkeys((r["model"], r.get("precision", "fp32")) for r in result["results"]):
        rs = [r for r in result["results"] if (r["model"], r.get("precision", "fp32")) == (model, precision)]
        label = f"{Path(model).name} {precision}"
        ax.plot([r["batch"] for r in rs], [r["p50_ms"] for r in rs], marker="o", label=label)
    ax.set(xlabel="batch size", ylabel="p50 latency (ms)", title="latency vs batch", xscale="log", yscale="log")
    ax.legend(fontsize=8)
    if points:
        ax2 = axes[0][1]
        for name, ms, r1 in points:
            ax2.scatter(ms, r1)
            ax2.annotate(name, (ms, r1), fontsize=8)
        ax2.set(xlabel="p50 latency at batch 1 (ms)", ylabel="rank-1 (%)", title="rank-1 vs latency")
    fig.tight_layout()
    path = save_figure(fig, out)
    plt.close(fig)
    return path
