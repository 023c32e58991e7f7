"""Pruning as a library call: ``prune_model`` (in memory) and ``prune_checkpoint`` (file to file)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidcompress._io import check_output_path, require_file
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import conv_widths, count_flops, count_params
from reidcompress.prune.engine import ScoredGroup
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.registry import MethodSpec, get_method
from reidcompress.prune.strategies import STRATEGIES
from reidcompress.prune.training import PruneData

if TYPE_CHECKING:
    from reidcompress.prune.latency import LatencyTarget

__all__ = ["prune_model", "prune_checkpoint", "load_prune_data", "pruning_record"]


def _complexity(model: ReIDNet) -> tuple[int, int]:
    return count_flops(model, model.config.input_size), count_params(model)


def _group_rates(groups: list[ScoredGroup], widths: dict[str, int]) -> dict[str, float]:
    return {g.root: round(1.0 - widths[g.root] / g.size, 6) for g in groups}


def prune_model(model: ReIDNet, method: str, options: PruneOptions, data: PruneData | None = None) -> dict[str, Any]:
    """Prune ``model`` in place with a registered method; returns the JSON-able pruning record.

    The record is also stored as ``model.pruning`` (a previous record is kept under ``previous``).
    Raises MethodError/InputError before touching the model when the options do not fit the method.
    """
    spec = get_method(method)
    options.check(spec, has_data=data is not None)
    flops0, params0 = _complexity(model)
    embedding_dim = model.embedding_dim
    groups = STRATEGIES[spec.strategy](model, spec.make_criterion(), options, data)
    assert model.embedding_dim == embedding_dim, "the embedding width must never change"
    return pruning_record(model, spec, options, groups, flops0, params0)


def pruning_record(
    model: ReIDNet, spec: MethodSpec, options: PruneOptions, groups: list[ScoredGroup], flops0: int, params0: int
) -> dict[str, Any]:
    """The record of a finished pruning of ``model`` (``flops0``/``params0``: before), stored as ``model.pruning``."""
    flops1, params1 = _complexity(model)
    widths = conv_widths(model)
    record: dict[str, Any] = {
        "method": spec.name,
        "paper": spec.paper,
        "strategy": spec.strategy,
        "rate": options.rate,
        "target_flops": options.target_flops,
        "scope": options.scope,
        "round_to": options.round_to,
        "residual": options.residual,
        "steps": options.steps,
        "epochs": options.epochs,
        "finetune_epochs": options.finetune_epochs,
        "flops_before": flops0,
        "flops_after": flops1,
        "flops_ratio": flops1 / flops0,
        "params_before": params0,
        "params_after": params1,
        "embedding_dim": model.embedding_dim,
        "input_size": list(model.config.input_size),
        "conv_widths": widths,
        "group_rates": _group_rates(groups, widths),
    }
    if options.target_flops is not None:
        record["target_met"] = abs(flops1 / flops0 - options.target_flops) <= options.tolerance * options.target_flops
    controller = model.meta.pop("controller", None)
    if controller is not None:
        record["controller"] = controller
    if options.sensitivity is not None:
        record["sensitivity"] = options.sensitivity.describe()
    if model.pruning:
        record["previous"] = model.pruning
    model.pruning = record
    return record


def load_prune_data(root: str | os.PathLike[str], dataset: str = "market1501", **kwargs: Any) -> PruneData:
    """The training split of a dataset on disk, for calibration and training-time methods."""
    from reidcompress.data.datasets import load_dataset

    return PruneData(items=tuple(load_dataset(root, dataset).train), **kwargs)


def prune_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    method: str,
    options: PruneOptions,
    *,
    data_root: str | os.PathLike[str] | None = None,
    dataset: str = "market1501",
    device: str = "cpu",
    latency: LatencyTarget | None = None,
    log: Callable[[str], None] | None = None,
    train_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint, prune it, save the result (atomically) with its pruning record.

    With ``latency``, the level is searched until the measured latency meets it (``prune.latency``).
    ``train_options``: TrainConfig fields for training-time methods and fine-tuning (a recipe's).
    Every option is checked before the (possibly long) work starts; a failure writes nothing.
    """
    require_file(checkpoint, "checkpoint")
    out_path = check_output_path(out, checkpoint)
    spec = get_method(method)
    if latency is None:
        options.check(spec, has_data=data_root is not None)
    else:
        from reidcompress.prune.latency import check_latency_request

        check_latency_request(spec, options, latency, has_data=data_root is not None)
    data = None
    if data_root is not None:
        data = load_prune_data(data_root, dataset, device=device, train_options=train_options)
    model = load_model(checkpoint, map_location=device)
    if latency is None:
        record = prune_model(model, method, options, data)
    else:
        from reidcompress.prune.latency import prune_for_latency

        record = prune_for_latency(model, method, options, latency, data, log=log)
    meta = {k: v for k, v in model.meta.items() if k not in ("saved_at", "reidcompress_version")}
    save_model(out_path, model.cpu(), pruning=record, meta={**meta, "pruned_from": str(Path(checkpoint))})
    return {"checkpoint": str(checkpoint), "out": str(out_path), **record}
