"""Options shared by ``train`` and ``finetune``, and what both do around the engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from reidcompress._parse import parse_assignments
from reidcompress.cli._common import console, emit_json, parse_ints
from reidcompress.errors import InputError
from reidcompress.train.config import TrainConfig
from reidcompress.train.engine import RunPaths, TrainResult

__all__ = ["config_from_options", "report", "parse_set", "load_train_dataset"]

_TRAIN = "Training options"

Epochs = Annotated[
    int | None,
    typer.Option("--epochs", "-e", help="Number of epochs (required without --recipe).", rich_help_panel=_TRAIN),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help="Recipe NAME (models/NAME.json) or FILE; options given here override it.",
        rich_help_panel=_TRAIN,
    ),
]
Lr = Annotated[float | None, typer.Option(help="Base learning rate (default: 3.5e-4).", rich_help_panel=_TRAIN)]
Optimizer = Annotated[str | None, typer.Option(help="adam | sgd (default: adam).", rich_help_panel=_TRAIN)]
Schedule = Annotated[str | None, typer.Option(help="step | cosine (default: step).", rich_help_panel=_TRAIN)]
WarmupEpochs = Annotated[
    int | None, typer.Option(help="Linear warm-up epochs (default: 10/120 of --epochs).", rich_help_panel=_TRAIN)
]
Milestones = Annotated[
    str | None,
    typer.Option(
        help="Step-decay epochs, e.g. 40,70 (default: 40/120 and 70/120 of --epochs).", rich_help_panel=_TRAIN
    ),
]
IdsPerBatch = Annotated[
    int | None,
    typer.Option("--ids-per-batch", "-P", help="P identities per batch (default: 16).", rich_help_panel=_TRAIN),
]
ImagesPerId = Annotated[
    int | None,
    typer.Option("--images-per-id", "-K", help="K images per identity (default: 4).", rich_help_panel=_TRAIN),
]
Margin = Annotated[float | None, typer.Option(help="Triplet margin (default: 0.3).", rich_help_panel=_TRAIN)]
SoftMargin = Annotated[bool, typer.Option("--soft-margin", help="Soft-margin triplet loss.", rich_help_panel=_TRAIN)]
Seed = Annotated[int | None, typer.Option(help="Random seed (default: 0).", rich_help_panel=_TRAIN)]
EvalEvery = Annotated[
    int | None, typer.Option(help="Evaluate every N epochs, and after the last (default: 10).", rich_help_panel=_TRAIN)
]
NumWorkers = Annotated[
    int | None,
    typer.Option(
        help="Data-loading processes per rank (default: 2); each has its own augmentation stream, as in torch's "
        "DataLoader, so the count is part of what a seed reproduces.",
        rich_help_panel=_TRAIN,
    ),
]
Amp = Annotated[
    bool | None, typer.Option("--amp/--no-amp", help="Mixed precision (CUDA only).", rich_help_panel=_TRAIN)
]
ChannelsLast = Annotated[
    bool | None,
    typer.Option(
        "--channels-last/--no-channels-last",
        help="channels-last memory (default: on CUDA only; on a CPU ~10% faster, but a seed no longer "
        "reproduces an NCHW run).",
        rich_help_panel=_TRAIN,
    ),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any other training option as KEY=VALUE (weight_decay, gamma, id_weight, triplet_weight, "
        "label_smoothing, clip_grad, momentum, min_lr_factor, warmup_factor, best_metric...). Repeatable.",
        rich_help_panel=_TRAIN,
    ),
]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (torchrun assigns one GPU per rank).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the interrupted run that writes --out.")]
Eval = Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate on the dataset's query/gallery.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def load_train_dataset(root: Path, name: str) -> Any:
    from reidcompress.data.datasets import load_dataset

    return load_dataset(root, name)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as TrainConfig fields (JSON values)."""
    return parse_assignments(items, "--set")


def config_from_options(
    epochs: int | None, given: dict[str, Any], extra: list[str] | None, recipe: dict[str, Any] | None = None
) -> TrainConfig:
    """A TrainConfig from the options the user gave (None = not given) over a recipe section and the defaults.

    When ``--epochs`` changes a recipe's epoch count, the recipe's warm-up and milestones are scaled
    with it (unless given explicitly), keeping the schedule's proportions.
    """
    opts = {k: v for k, v in given.items() if v is not None}
    if isinstance(opts.get("milestones"), str):
        opts["milestones"] = tuple(parse_ints(opts["milestones"], "--milestones"))
    if epochs is None and not (recipe or {}).get("epochs"):
        raise InputError("--epochs is required (or a --recipe that sets train/finetune epochs)")
    return TrainConfig.from_recipe(recipe or {}, epochs, **{**parse_set(extra), **opts})


@contextlib.contextmanager
def resume_hint(out: Path) -> Iterator[None]:
    """On Ctrl-C, say where the last finished epoch is kept and how to continue (exit 130, as a shell does)."""
    try:
        yield
    except KeyboardInterrupt:
        state = RunPaths.beside(out).state
        if state.exists():
            hint = f"the last finished epoch is saved in {state}; run the same command with --resume to continue"
        else:
            hint = "no epoch had finished, so there is nothing to resume"
        typer.echo(f"interrupted: {hint}", err=True)
        raise typer.Exit(130) from None


def report(result: TrainResult, json_out: bool) -> None:
    """Rank 0's summary: a JSON object or a few lines on stderr."""
    paths = RunPaths.beside(result.out) if result.out else None
    last = result.history[-1] if result.history else {}
    summary = {
        "out": str(result.out) if result.out else None,
        "epochs": result.epochs,
        "best": result.best,
        "last": last,
        "state": str(paths.state) if paths else None,
        "log": str(paths.log) if paths else None,
        "best_model": str(paths.best) if paths and result.best else None,
    }
    if json_out:
        emit_json(summary)
        return
    console.print(f"trained {result.epochs} epochs -> {result.out}  (log {summary['log']})")
    if result.best:
        b = result.best
        console.print(
            f"best epoch {b['epoch']}: rank-1 {b.get('rank1', float('nan')):.2f}  mAP {b.get('mAP', float('nan')):.2f}"
            f"  -> {summary['best_model']}"
        )
