"""The sensitivity analysis: each prunable group pruned alone at several rates and evaluated.

Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017, section 3.2 and Figure 2) prune each
layer independently, evaluate without retraining, and prune the insensitive layers harder. Here every
prunable group of a checkpoint is pruned alone at each rate with a registered one-shot criterion (the
other groups untouched, no fine-tuning) and evaluated on the query/gallery; the result records, per
group and rate, the FLOPs saved and the rank-1/mAP lost.

The analysis is resumable: every (group, rate) result is written as soon as it is measured, in a
folder keyed by everything the numbers depend on (checkpoint content, method, data files, query
subset, options), and reused by the next run with the same key (``store.ResultStore``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reidcompress._io import file_sha256, json_digest, require_file
from reidcompress.errors import InputError, MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.prune.engine import ScoredGroup, apply_plan, select_channels
from reidcompress.prune.planning import FlopModel, round_kept
from reidcompress.prune.sensitivity.profile import FORMAT
from reidcompress.prune.sensitivity.store import ResultStore

__all__ = ["DEFAULT_RATES", "analyse_sensitivity", "check_rates"]

DEFAULT_RATES = (0.1, 0.3, 0.5, 0.7)
_VERSION = 1

Progress = Callable[[str, int, int], None]  # (description, done, total)


def check_rates(rates: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique rates, each in (0, 1); InputError otherwise."""
    if not rates:
        raise InputError("`rates` is empty: give at least one (e.g. 0.1,0.3,0.5,0.7)")
    bad = [r for r in rates if not 0.0 < r < 1.0]
    if bad:
        raise InputError(f"sensitivity rates must be in (0, 1), got {bad}")
    return tuple(sorted(set(float(r) for r in rates)))


def _metrics(model: ReIDNet, *, dataset: Any, device: str) -> dict[str, float]:
    from reidcompress.evaluation.features import evaluate_embedder
    from reidcompress.runtime.torch_backend import TorchEmbedder

    res = evaluate_embedder(TorchEmbedder(model, device=device), dataset, progress=False)
    return {"rank1": float(res["rank1"]), "mAP": float(res["mAP"])}


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
    from reidcompress.prune.options import PruneOptions
    from reidcompress.prune.registry import get_method
    from reidcompress.prune.strategies.oneshot import score_model
    from reidcompress.prune.training import load_prune_data

    rates = check_rates(rates)
    spec = get_method(method)
    if spec.strategy != "oneshot":
        raise MethodError(f"sensitivity analysis prunes once without training; {method} is a {spec.strategy} method")
    if max_queries is not None and max_queries < 1:
        raise InputError(f"`max_queries` must be >= 1, got {max_queries}")
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
    results = ResultStore(
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
    results: ResultStore,
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
