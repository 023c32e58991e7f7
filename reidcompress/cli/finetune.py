"""``reidcompress finetune``: fine-tune a (pruned or unpruned) checkpoint on a target dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reidcompress._io import check_output_path, require_file
from reidcompress.cli import _train_options as o
from reidcompress.cli._common import handle_errors
from reidcompress.models.recipes import load_recipe
from reidcompress.train.distributed import init_distributed, shutdown_distributed
from reidcompress.train.finetune import finetune_checkpoint


@handle_errors
def finetune_cmd(
    ckpt: Annotated[Path, typer.Argument(help="reidcompress checkpoint to fine-tune (pruned shapes are kept).")],
    data: Annotated[Path, typer.Option(help="Target dataset root folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fine-tuned checkpoint.")],
    epochs: o.Epochs = None,
    dataset: Annotated[str, typer.Option(help="Dataset layout (market1501, dukemtmcreid, msmt17...).")] = "market1501",
    teacher: Annotated[
        Path | None, typer.Option(help="Checkpoint to distil from (e.g. the unpruned model); frozen, eval mode.")
    ] = None,
    distill_weight: Annotated[
        float | None, typer.Option(help="Weight of the distillation loss (default: 1.0).")
    ] = None,
    distill_loss: Annotated[
        str | None, typer.Option(help="mse | cosine, on L2-normalised features (default: mse).")
    ] = None,
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
    recipe: o.RecipeOpt = None,
    evaluate: o.Eval = True,
    device: o.Device = "auto",
    resume: o.Resume = False,
    json_out: o.JsonOut = False,
) -> None:
    """Fine-tune a checkpoint on a target dataset: same architecture, new ID classifier."""
    require_file(ckpt, "checkpoint")
    if teacher is not None:
        require_file(teacher, "teacher checkpoint")
    check_output_path(out, ckpt, *([teacher] if teacher else []))
    given = dict(lr=lr, optimizer=optimizer, schedule=schedule, warmup_epochs=warmup_epochs, milestones=milestones)
    given.update(p=p, k=k, margin=margin, soft_margin=soft_margin or None, seed=seed, eval_every=eval_every)
    given.update(num_workers=num_workers, amp=amp, channels_last=channels_last)
    given.update(distill_weight=distill_weight, distill_loss=distill_loss)
    config = o.config_from_options(epochs, given, set_, load_recipe(recipe).finetune if recipe else None)
    ctx = init_distributed(device)
    try:
        ds = o.load_train_dataset(data, dataset)
        with o.resume_hint(out):
            result = finetune_checkpoint(
                ckpt,
                ds,
                config,
                out=out,
                teacher=teacher,
                evaluate=evaluate,
                resume=resume,
                device=ctx.device,
                progress=True,
            )
        if ctx.is_main:
            o.report(result, json_out)
    finally:
        shutdown_distributed()
