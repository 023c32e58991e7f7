"""``reidcompress train``: train a ReID network on a dataset (single process or under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from reidcompress._io import check_output_path
from reidcompress.cli import _train_options as o
from reidcompress.cli._common import handle_errors, parse_size
from reidcompress.models.backbones import list_backbones
from reidcompress.models.recipes import Recipe, load_recipe
from reidcompress.models.reid import MODEL_DEFAULTS
from reidcompress.train.distributed import init_distributed, shutdown_distributed
from reidcompress.train.engine import train
from reidcompress.train.pretrained import build_model


def _format_size(size: Any) -> str:
    return "x".join(str(v) for v in size)


@handle_errors
def train_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the trained model checkpoint.")],
    epochs: o.Epochs = None,
    dataset: Annotated[str, typer.Option(help="Dataset layout (market1501, dukemtmcreid, msmt17...).")] = "market1501",
    arch: Annotated[
        str | None,
        typer.Option(help=f"Backbone architecture (default: {MODEL_DEFAULTS.arch}): {', '.join(list_backbones())}."),
    ] = None,
    input_size: Annotated[
        str | None, typer.Option(help=f"Input HEIGHTxWIDTH (default: {_format_size(MODEL_DEFAULTS.input_size)}).")
    ] = None,
    pretrained: Annotated[
        Path | None, typer.Option(help="reidcompress checkpoint whose trunk to start from (e.g. imported ImageNet).")
    ] = None,
    last_stride: Annotated[
        int | None,
        typer.Option(help=f"Stride of the last stage (default {MODEL_DEFAULTS.last_stride}: a 2x larger last map)."),
    ] = None,
    pooling: Annotated[str | None, typer.Option(help=f"avg | gem (default: {MODEL_DEFAULTS.pooling}).")] = None,
    recipe: o.RecipeOpt = None,
    lr: o.Lr = None,
    optimizer: o.Optimizer = None,
    schedule: o.Schedule = None,
    warmup_epochs: o.WarmupEpochs = None,
    milestones: o.Milestones = None,
    p: o.IdsPerBatch = None,
    k: o.ImagesPerId = None,
    margin: o.Margin = None,
    soft_margin: o.SoftMargin = False,
    seed: o.Seed = None,
    eval_every: o.EvalEvery = None,
    num_workers: o.NumWorkers = None,
    amp: o.Amp = None,
    channels_last: o.ChannelsLast = None,
    set_: o.Set = None,
    evaluate: o.Eval = True,
    device: o.Device = "auto",
    resume: o.Resume = False,
    json_out: o.JsonOut = False,
) -> None:
    """Train a ReID network (ID + batch-hard triplet loss, P x K batches) from scratch or a pretrained trunk."""
    check_output_path(out, *([pretrained] if pretrained else []))
    given = dict(lr=lr, optimizer=optimizer, schedule=schedule, warmup_epochs=warmup_epochs, milestones=milestones)
    given.update(p=p, k=k, margin=margin, soft_margin=soft_margin or None, seed=seed, eval_every=eval_every)
    given.update(num_workers=num_workers, amp=amp, channels_last=channels_last)
    rec = load_recipe(recipe) if recipe else None
    config = o.config_from_options(epochs, given, set_, rec.train if rec else None)
    spec = _model_spec(rec, arch=arch, input_size=input_size, last_stride=last_stride, pooling=pooling)
    ctx = init_distributed(device)
    try:
        ds = o.load_train_dataset(data, dataset)
        torch.manual_seed(config.seed)
        model = build_model(
            spec["arch"],
            ds.num_train_pids,
            spec["input_size"],
            pretrained=pretrained,
            last_stride=spec["last_stride"],
            pooling=spec["pooling"],
        )
        meta = {"dataset": ds.name, "data_root": str(data), "pretrained": str(pretrained) if pretrained else None}
        if rec:
            meta["recipe"] = rec.name
        with o.resume_hint(out):
            result = train(
                model,
                ds.train,
                config,
                eval_data=ds if evaluate else None,
                out=out,
                resume=resume,
                device=ctx.device,
                meta=meta,
                progress=True,
            )
        if ctx.is_main:
            o.report(result, json_out)
    finally:
        shutdown_distributed()


def _model_spec(rec: Recipe | None, **given: Any) -> dict[str, Any]:
    """Model settings: command-line options over the recipe's ``model`` section over ``MODEL_DEFAULTS``."""
    defaults = {k: getattr(MODEL_DEFAULTS, k) for k in ("arch", "last_stride", "pooling")}
    defaults["input_size"] = _format_size(MODEL_DEFAULTS.input_size)
    from_recipe = dict(rec.model) if rec else {}
    if "input_size" in from_recipe:
        from_recipe["input_size"] = _format_size(from_recipe["input_size"])
    spec = {**defaults, **from_recipe, **{k: v for k, v in given.items() if v is not None}}
    spec["input_size"] = parse_size(str(spec["input_size"]))
    return spec
