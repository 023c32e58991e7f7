"""Per-layer sensitivity to pruning, and the per-layer rates it implies for a FLOPs target.

Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017, section 3.2 and Figure 2) prune each
layer independently, evaluate without retraining, and prune the insensitive layers harder. Here every
prunable group of a checkpoint is pruned alone at each rate with a registered one-shot criterion (the
other groups untouched, no fine-tuning) and evaluated on the query/gallery; the result records, per
group and rate, the FLOPs saved and the rank-1/mAP lost.

The analysis is resumable: every (group, rate) result is written as soon as it is measured, in a
folder keyed by everything the numbers depend on (checkpoint content, method, data files, query
subset, options), and reused by the next run with the same key.

:class:`SensitivityProfile` reads a saved analysis back for ``prune --sensitivity``: the measured
drops become a cost per group that ``planning.kept_for_costs`` trades against FLOPs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import atomic_write_text, file_sha256, json_digest, require_file, save_figure
from reidcompress.errors import InputError, MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.prune.engine import ScoredGroup, apply_plan, select_channels
from reidcompress.prune.planning import FlopModel, round_kept

__all__ = [
    "DEFAULT_RATES",
    "METRICS",
    "SensitivityProfile",
    "analyse_sensitivity",
    "check_rates",
    "plot_sensitivity",
]

DEFAULT_RATES = (0.1, 0.3, 0.5, 0.7)
METRICS = ("rank1", "mAP")
FORMAT = "reidcompress.sensitivity"
_VERSION = 1

Progress = Callable[[str, int, int], None]  # (description, done, total)


def check_rates(rates: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique rates, each in (0, 1); InputError otherwise."""
    if not rates:
        raise InputError("give at least one rate (--rates 0.1,0.3,0.5,0.7)")
    bad = [r for r in rates if not 0.0 < r < 1.0]
    if bad:
        raise InputError(f"sensitivity rates must be in (0, 1), got {bad}")
    return tuple(sorted(set(float(r) for r in rates)))


def _metrics(model: ReIDNet, *, dataset: Any, device: str) -> dict[str, float]:
    from reidcompress.evaluation.features import evaluate_embedder
    from reidcompress.runtime.torch_backend import TorchEmbedder

    res = evaluate_embedder(TorchEmbedder(model, device=device), dataset, progress=False)
    return {"rank1": float(res["rank1"]), "mAP": float(res["mAP"])}


class _Store:
    """One JSON file per finished measurement, under a folder named by the analysis key."""

    def __init__(self, root: Path, key: str, description: Mapping[str, Any]) -> None:
        self.dir = root / key
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "key.json", json.dumps(description, indent=2, default=str))

    def _path(self, name: str) -> Path:
        return self.dir / f"{name.replace('/', '_')}.json"

    def get(self, name: str) -> dict[str, Any] | None:
        p = self._path(name)
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except (OSError, json.JSONDecodeError):
            return None  # an unreadable entry is measured again

    def put(self, name: str, value: dict[str, Any]) -> dict[str, Any]:
        atomic_write_text(self._path(name), json.dumps(value))
        return value


def _point(
    model: ReIDNet,
    group: ScoredGroup,
    kept: int,
    groups: Sequence[ScoredGroup],
    flop_model: FlopModel,
    evaluate: Callable[[ReIDNet], dict[str, float]],
    base: dict[str, float],
) -> dict[str, Any]:
    """Prune ``group`` alone to ``kept`` channels on a copy of ``model`` and measure it."""
    widths = {g.root: g.size for g in groups}
    flops = flop_model.estimate(groups, {**widths, group.root: kept})
    if kept < group.size:
        pruned = copy.deepcopy(model)
        apply_plan(pruned, select_channels([group], {group.root: kept}))
        metrics = evaluate(pruned)
    else:
        metrics = dict(base)  # rounding kept every channel: nothing to measure
    return {
        "kept": kept,
        "flops_saved": (flop_model.total - flops) / flop_model.total,
        **metrics,
        "rank1_drop": base["rank1"] - metrics["rank1"],
        "mAP_drop": base["mAP"] - metrics["mAP"],
    }


def analyse_sensitivity(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    method: str = "hao_li",
    rates: Sequence[float] = DEFAULT_RATES,
    dataset: str = "market1501",
    max_queries: int | None = None,
    residual: bool = False,
    round_to: int = 1,
    calib_batches: int = 8,
    seed: int = 0,
    device: str = "cpu",
    store: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Prune each prunable group alone at each rate (no fine-tuning) and evaluate it.

    Args:
        checkpoint: the model to analyse.
        data: dataset root; query/gallery are evaluated, the training split calibrates data-driven criteria.
        method: a one-shot pruning method (its criterion chooses the channels).
        rates: fractions of a group's channels removed.
        max_queries: evaluate a fixed random subset of this many queries (``seed``), for speed.
        residual: also analyse the residual-stream groups.
        round_to: kept counts are multiples of this (1: the rates exactly).
        store: folder of the resumable results (default: the feature cache's folder).
        progress: called with (description, done, total) after every measurement.

    Returns:
        The JSON-able analysis: baseline metrics, and per group its channels and one entry per rate.
    """
    from reidcompress.data.datasets import load_dataset
    from reidcompress.evaluation.cache import default_cache_dir, items_digest
    from reidcompress.export.calibration import sample_items
    from reidcompress.models.checkpoint import load_model
    from reidcompress.prune.api import load_prune_data
    from reidcompress.prune.options import PruneOptions
    from reidcompress.prune.registry import get_method
    from reidcompress.prune.strategies.oneshot import score_model

    rates = check_rates(rates)
    spec = get_method(method)
    if spec.strategy != "oneshot":
        raise MethodError(f"sensitivity analysis prunes once without training; {method} is a {spec.strategy} method")
    if max_queries is not None and max_queries < 1:
        raise InputError(f"--max-queries must be >= 1, got {max_queries}")
    options = PruneOptions(rate=0.0, residual=residual, round_to=round_to, calib_batches=calib_batches)
    options.check(spec, has_data=True)
    ckpt = require_file(checkpoint, "checkpoint")
    ds = load_dataset(data, dataset)
    if max_queries is not None and max_queries < len(ds.query):
        ds = dataclasses.replace(ds, query=sample_items(ds.query, max_queries, seed))
    model = load_model(ckpt, map_location=device)
    description = {
        "format": FORMAT,
        "version": _VERSION,
        "checkpoint_sha256": file_sha256(ckpt),
        "method": method,
        "dataset": ds.name,
        "query": items_digest(ds.query),
        "gallery": items_digest(ds.gallery),
        "residual": residual,
        "round_to": round_to,
        "calib_batches": calib_batches if spec.needs_data else None,
        "seed": seed,
    }
    results = _Store(
        Path(store) if store else default_cache_dir() / "sensitivity", json_digest(description, 20), description
    )
    prune_data = load_prune_data(data, dataset, device=device, seed=seed) if spec.needs_data else None
    groups = score_model(model, spec.make_criterion(), options, prune_data)
    evaluate = functools.partial(_metrics, dataset=ds, device=device)
    base, layers, flops = _measure(model, groups, rates, round_to, results, evaluate, progress)
    return {
        **description,
        "checkpoint": str(ckpt),
        "arch": model.config.arch,
        "input_size": list(model.config.input_size),
        "rates": list(rates),
        "max_queries": max_queries,
        "queries": len(ds.query),
        "gallery_images": len(ds.gallery),
        "flops": flops,
        "baseline": base,
        "layers": layers,
        "store": str(results.dir),
    }


def _measure(
    model: ReIDNet,
    groups: Sequence[ScoredGroup],
    rates: Sequence[float],
    round_to: int,
    results: _Store,
    evaluate: Callable[[ReIDNet], dict[str, float]],
    progress: Progress | None,
) -> tuple[dict[str, float], list[dict[str, Any]], int]:
    """The unpruned metrics, then every (group, rate) point not in ``results`` yet; (base, layers, FLOPs)."""
    flop_model = FlopModel.of(model, model.config.input_size)
    base = results.get("baseline") or results.put("baseline", evaluate(model))
    total, done = len(groups) * len(rates), 0
    layers = []
    for g in groups:
        points = []
        for rate in rates:
            name = f"{g.root}@{rate:g}"
            point = results.get(name)
            if point is None:
                kept = round_kept(g.size * (1.0 - rate), g.size, round_to)
                point = results.put(name, _point(model, g, kept, groups, flop_model, evaluate, base))
            points.append({"rate": rate, **point})
            done += 1
            if progress is not None:
                progress(f"{g.root} at {rate:g}", done, total)
        layer = {"root": g.root, "channels": g.size, "out_convs": list(g.out_convs), "residual": g.residual}
        layers.append({**layer, "points": points})
    return base, layers, flop_model.total


@dataclass(frozen=True)
class SensitivityProfile:
    """A saved analysis as accuracy costs: per group, the points lost when ``rate`` of it is removed.

    The measured drops are made non-decreasing in the rate (a running maximum, floored at zero: a
    small gain from pruning is noise, not a reason to prune more) and interpolated linearly from 0 at
    rate 0. Rates beyond the largest analysed one are not extrapolated.
    """

    path: str
    method: str
    checkpoint_sha256: str
    residual: bool
    metric: str
    curves: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]  # root -> (rates, costs)
    sizes: Mapping[str, int]

    @classmethod
    def load(cls, path: str | os.PathLike[str], metric: str = "rank1") -> SensitivityProfile:
        if metric not in METRICS:
            raise InputError(f"the sensitivity metric must be one of {', '.join(METRICS)}, got {metric!r}")
        p = require_file(path, "sensitivity file")
        try:
            data = json.loads(p.read_text())
            if data.get("format") != FORMAT:
                raise ValueError("not written by `reidcompress sensitivity --json`/--report")
            curves, sizes = {}, {}
            for layer in data["layers"]:
                pts = sorted((float(q["rate"]), float(q[f"{metric}_drop"])) for q in layer["points"])
                costs = np.maximum.accumulate(np.maximum([0.0] + [c for _, c in pts], 0.0))
                curves[layer["root"]] = ((0.0, *(r for r, _ in pts)), tuple(float(c) for c in costs))
                sizes[layer["root"]] = int(layer["channels"])
            return cls(str(p), data["method"], data["checkpoint_sha256"], bool(data["residual"]), metric, curves, sizes)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{p}: not a sensitivity analysis ({e})") from None

    def cost(self, root: str, rate: float) -> float:
        rates, costs = self.curves[root]
        return float(np.interp(rate, rates, costs))

    def min_kept(self, groups: Sequence[ScoredGroup], round_to: int) -> dict[str, int]:
        """The fewest channels each group may keep: its largest analysed rate, rounded up to ``round_to``."""
        self.check_groups(groups)
        out = {}
        for g in groups:
            floor = g.size * (1.0 - self.curves[g.root][0][-1])
            out[g.root] = min(g.size, max(round_to, math.ceil(floor / round_to - 1e-9) * round_to))
        return out

    def check_groups(self, groups: Sequence[ScoredGroup]) -> None:
        """The analysis must cover exactly these groups, at these widths."""
        have = {g.root: g.size for g in groups}
        if have != dict(self.sizes):
            missing = sorted(set(have) - set(self.sizes))
            extra = sorted(set(self.sizes) - set(have))
            widths = sorted(r for r in set(have) & set(self.sizes) if have[r] != self.sizes[r])
            raise MethodError(
                f"{self.path} does not describe this network's prunable groups (analysed with "
                f"{'--residual' if self.residual else '--no-residual'}; not analysed: {missing or 'none'}; "
                f"unknown here: {extra or 'none'}; other widths: {widths or 'none'})"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "method": self.method,
            "checkpoint_sha256": self.checkpoint_sha256,
            "metric": self.metric,
            "max_rate": max(r[-1] for r, _ in self.curves.values()),
        }


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
