"""``reidcompress train``: train a ReID network on a dataset (single process or under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from reidcompress._io import check_output_path
from reidcompress.cli import _train_options as o
from reidcompress.cli._common import handle_errors, parse_size
from reidcompress.models.recipes import Recipe, load_recipe
from reidcompress.train.distributed import init_distributed, shutdown_distributed
from reidcompress.train.engine import train
from reidcompress.train.pretrained import build_model


@handle_errors
def train_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the trained model checkpoint.")],
    epochs: o.Epochs = None,
    dataset: Annotated[str, typer.Option(help="Dataset layout (market1501, dukemtmcreid, msmt17...).")] = "market1501",
    arch: Annotated[str | None, typer.Option(help="Backbone architecture (default: resnet50).")] = None,
    input_size: Annotated[str | None, typer.Option(help="Input HEIGHTxWIDTH (default: 256x128).")] = None,
    pretrained: Annotated[
        Path | None, typer.Option(help="reidcompress checkpoint whose trunk to start from (e.g. imported ImageNet).")
    ] = None,
    last_stride: Annotated[int | None, typer.Option(help="Stride of layer4 (default 1: a 2x larger last map).")] = None,
    pooling: Annotated[str | None, typer.Option(help="avg | gem (default: avg).")] = None,
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


_MODEL_DEFAULTS = {"arch": "resnet50", "input_size": "256x128", "last_stride": 1, "pooling": "avg"}


def _model_spec(rec: Recipe | None, **given: Any) -> dict[str, Any]:
    """Model settings: command-line options over the recipe's ``model`` section over the defaults."""
    from_recipe = dict(rec.model) if rec else {}
    if "input_size" in from_recipe:
        from_recipe["input_size"] = "x".join(str(v) for v in from_recipe["input_size"])
    spec = {**_MODEL_DEFAULTS, **from_recipe, **{k: v for k, v in given.items() if v is not None}}
    spec["input_size"] = parse_size(str(spec["input_size"]))
    return spec
