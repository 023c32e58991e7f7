"""``reidcompress sensitivity``: each prunable layer pruned alone at several rates, FLOPs saved vs accuracy lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from reidcompress._io import atomic_write_text
from reidcompress.cli._common import console, emit_json, handle_errors, out_console, parse_floats
from reidcompress.prune.sensitivity import DEFAULT_RATES, analyse_sensitivity, plot_sensitivity


def _table(res: dict[str, Any]) -> Table:
    base = res["baseline"]
    t = Table(
        title=f"{res['method']} sensitivity of {res['checkpoint']}: rank-1 lost (points) / FLOPs saved, "
        f"unpruned rank-1 {base['rank1']:.2f}, mAP {base['mAP']:.2f} on {res['queries']} queries"
    )
    t.add_column("group (root conv)")
    t.add_column("channels", justify="right")
    for rate in res["rates"]:
        t.add_column(f"rate {rate:g}", justify="right")
    for layer in res["layers"]:
        cells = [f"{p['rank1_drop']:+.2f} / {100 * p['flops_saved']:.1f}%" for p in layer["points"]]
        t.add_row(layer["root"].removeprefix("backbone."), str(layer["channels"]), *cells)
    return t


@handle_errors
def sensitivity_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A reidcompress checkpoint.")],
    data: Annotated[Path, typer.Option(help="Dataset root: query/gallery are evaluated.")],
    method: Annotated[str, typer.Option("--method", "-m", help="One-shot pruning method (its criterion).")] = "hao_li",
    rates: Annotated[str, typer.Option(help="Comma-separated fractions of a group's channels removed.")] = ",".join(
        f"{r:g}" for r in DEFAULT_RATES
    ),
    max_queries: Annotated[
        int | None, typer.Option(help="Evaluate a fixed random subset of this many queries (faster).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset layout under --data.")] = "market1501",
    residual: Annotated[
        bool, typer.Option("--residual/--no-residual", help="Also analyse the coupled residual channels.")
    ] = False,
    round_to: Annotated[int, typer.Option(help="Kept channel counts are multiples of this.")] = 1,
    calib_batches: Annotated[int, typer.Option(help="Calibration batches for data-driven criteria.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the query subset and calibration batches.")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda[:N].")] = "cpu",
    report: Annotated[
        Path | None, typer.Option(help="Folder for sensitivity.json, sensitivity.png and the resumable results.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Prune each layer alone at each rate (no fine-tuning): rank-1/mAP lost and FLOPs saved per layer.

    Every result is saved as it is measured: an interrupted run resumes where it stopped. Feed the
    JSON to `reidcompress prune --sensitivity FILE --target-flops F` for per-layer rates.
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("scoring and evaluating the unpruned model", total=None)

        def advance(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        res = analyse_sensitivity(
            checkpoint,
            data,
            method=method,
            rates=parse_floats(rates, "--rates"),
            dataset=dataset,
            max_queries=max_queries,
            residual=residual,
            round_to=round_to,
            calib_batches=calib_batches,
            seed=seed,
            device=device,
            store=report / "results" if report is not None else None,
            progress=advance,
        )
    if res["baseline"]["rank1"] < 100.0 / max(1, res["queries"]):
        console.print(
            "[yellow]warning: the unpruned model ranks no query right: there is no accuracy to lose, so the "
            "analysis cannot tell the layers apart (train the model first)"
        )
    if report is not None:
        atomic_write_text(report / "sensitivity.json", json.dumps(res, indent=2))
        plot = plot_sensitivity(res, report / "sensitivity.png")
        console.print(f"report: {report / 'sensitivity.json'} and {plot}")
    if json_out:
        emit_json(res)
    else:
        out_console.print(_table(res))
