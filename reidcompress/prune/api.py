"""Pruning as a library call: ``prune_model`` (in memory), ``prune_checkpoint`` (file to file) and
``prune_with_settings`` (file to file from loose settings and a recipe, as ``reidcompress prune`` runs it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidcompress._io import check_output_path, require_file
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import complexity
from reidcompress.prune.options import PruneOptions, resolve_options
from reidcompress.prune.record import pruning_record
from reidcompress.prune.registry import MethodSpec, get_method
from reidcompress.prune.strategies import STRATEGIES
from reidcompress.prune.training import PruneData, load_prune_data

if TYPE_CHECKING:
    from reidcompress.prune.latency import LatencyTarget

__all__ = ["prune_model", "prune_checkpoint", "prune_with_settings", "load_prune_data", "pruning_record"]


def prune_model(model: ReIDNet, method: str, options: PruneOptions, data: PruneData | None = None) -> dict[str, Any]:
    """Prune ``model`` in place with a registered method; returns the JSON-able pruning record.

    The record is also stored as ``model.pruning`` (a previous record is kept under ``previous``).
    Raises MethodError/InputError before touching the model when the options do not fit the method.
    """
    spec = get_method(method)
    options.check(spec, has_data=data is not None)
    return _prune(model, spec, options, data)


def _prune(model: ReIDNet, spec: MethodSpec, options: PruneOptions, data: PruneData | None) -> dict[str, Any]:
    """``prune_model`` on options already checked."""
    before = complexity(model)
    embedding_dim = model.embedding_dim
    result = STRATEGIES[spec.strategy](model, spec.make_criterion(), options, data)
    assert model.embedding_dim == embedding_dim, "the embedding width must never change"
    return pruning_record(model, spec, options, result, before)


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
        # Imported on use: latency targets bring the export and runtime stack, which plain pruning never needs.
        from reidcompress.prune.latency import check_latency_request

        check_latency_request(spec, options, latency, has_data=data_root is not None)
    data = None
    if data_root is not None:
        data = load_prune_data(data_root, dataset, device=device, train_options=train_options)
    model = load_model(checkpoint, map_location=device)
    if latency is None:
        record = _prune(model, spec, options, data)
    else:
        from reidcompress.prune.latency import search_latency

        record = search_latency(model, spec, options, latency, data, None, log)
    meta = {k: v for k, v in model.meta.items() if k not in ("saved_at", "reidcompress_version")}
    save_model(out_path, model.cpu(), pruning=record, meta={**meta, "pruned_from": str(Path(checkpoint))})
    return {"checkpoint": str(checkpoint), "out": str(out_path), **record}


def prune_with_settings(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: Mapping[str, Any],
    *,
    recipe: str | os.PathLike[str] | None = None,
    sensitivity: str | os.PathLike[str] | None = None,
    latency: LatencyTarget | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``prune_checkpoint`` from loose settings, as a command line or a config file gives them.

    ``settings`` holds ``method`` and PruneOptions fields (None = not set), merged over ``recipe``'s
    prune section (``options.resolve_options``); ``kwargs`` go to ``prune_checkpoint``.
    """
    method, options, train_options = resolve_options(
        settings, recipe=recipe, sensitivity=sensitivity, latency=latency is not None
    )
    return prune_checkpoint(checkpoint, out, method, options, latency=latency, train_options=train_options, **kwargs)
