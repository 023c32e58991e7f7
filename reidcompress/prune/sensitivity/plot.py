"""The figure of a sensitivity analysis: rank-1 lost per group and rate, and FLOPs saved per point lost."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import save_figure

__all__ = ["plot_sensitivity"]


def plot_sensitivity(result: Mapping[str, Any], out: str | os.PathLike[str]) -> Path:
    """Rank-1 drop vs rate (one line per group), and FLOPs saved per point of rank-1 lost.

    A drop smaller than one query's worth of rank-1 (100 / queries points) cannot be told from no
    drop, so the efficiency divides by at least that: its bars are lower bounds.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    resolution = 100.0 / max(1, int(result["queries"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for layer in layers:
        pts = layer["points"]
        ax1.plot([p["rate"] for p in pts], [p["rank1_drop"] for p in pts], marker="o", label=_short(layer["root"]))
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set(xlabel="fraction of the group's channels removed", ylabel="rank-1 lost (points)")
    ax1.set_title(f"{result['method']}: each group pruned alone, no fine-tuning")
    ax1.legend(fontsize=7, ncol=2)
    rates = result["rates"]
    width = 0.8 / len(rates)
    x = np.arange(len(layers))
    for i, rate in enumerate(rates):
        eff = [_efficiency(layer["points"][i], resolution) for layer in layers]
        ax2.bar(x + (i - (len(rates) - 1) / 2) * width, eff, width, label=f"rate {rate:g}")
    ax2.set_xticks(x, [_short(layer["root"]) for layer in layers], rotation=60, ha="right", fontsize=7)
    ax2.set(ylabel="FLOPs saved (% of model) per point of rank-1 lost", yscale="log")
    ax2.set_title(f"higher = cheaper to prune (drops floored at {resolution:.2g} points)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, out)
    plt.close(fig)
    return path


def _efficiency(point: Mapping[str, float], resolution: float) -> float:
    return 100.0 * point["flops_saved"] / max(point["rank1_drop"], resolution)


def _short(root: str) -> str:
    return root.removeprefix("backbone.")
