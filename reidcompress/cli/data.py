"""``reidcompress data``: synthesize a Market-1501-style dataset, or check a dataset folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from reidcompress.cli._common import console, emit_json, handle_errors, out_console, parse_size
from reidcompress.data.datasets import list_datasets, load_dataset
from reidcompress.data.synth import list_styles, synthesize

app = typer.Typer(
    name="data",
    help="Datasets: make a synthetic Market-1501-style set, or check a dataset folder.",
    no_args_is_help=True,
)


def _split_table(title: str, splits: dict[str, dict[str, int]]) -> Table:
    t = Table(title=title)
    for col in ("split", "identities", "images", "cameras"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for name, s in splits.items():
        t.add_row(name, str(s["ids"]), str(s["images"]), str(s["cams"]))
    return t


@app.command("synth")
@handle_errors
def synth_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to create (Market-1501 layout).")],
    ids: Annotated[int, typer.Option("--ids", help="Identities, half train, half test.")] = 150,
    cams: Annotated[int, typer.Option("--cams", help="Cameras (2..6).")] = 6,
    images_per_id: Annotated[int, typer.Option("--images-per-id", help="Images per identity (>= 4).")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the identities and every image.")] = 0,
    style: Annotated[str, typer.Option("--style", help=f"Domain: {' | '.join(list_styles())}.")] = "source",
    size: Annotated[str, typer.Option("--size", help="Image HEIGHTxWIDTH.")] = "128x64",
    query_per_id: Annotated[
        int | None, typer.Option("--query-per-id", help="Query images per test identity [default: one per camera].")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it is a synthetic set.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write a synthetic person ReID dataset in the exact Market-1501 layout (same arguments, same bytes)."""
    hw = parse_size(size)
    start = time.perf_counter()
    columns = (TextColumn("synthesizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("images", total=None)
        info = synthesize(
            out,
            ids=ids,
            cams=cams,
            images_per_id=images_per_id,
            seed=seed,
            style=style,
            size=hw,
            query_per_id=query_per_id,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    seconds = time.perf_counter() - start
    if json_out:
        emit_json({**_brief(info), "seconds": round(seconds, 3)})
        return
    n = sum(info["images"].values())
    console.print(f"wrote {n} images ({info['style']} style, {hw[0]}x{hw[1]}) to {out} in {seconds:.1f} s")
    console.print(
        f"train ids {len(info['train_ids'])}, test ids {len(info['test_ids'])}; "
        f"gallery holds {info['junk_images']} junk and {info['distractor_images']} distractor images"
    )


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    """synth.json without the bulky id lists and camera records."""
    skip = ("train_ids", "test_ids", "cameras")
    return {k: v for k, v in info.items() if k not in skip}


@app.command("info")
@handle_errors
def info_cmd(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help=f"{' | '.join(list_datasets())}.")] = "market1501",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parse a dataset folder and show identities, images and cameras per split."""
    ds = load_dataset(root, dataset)
    summary = ds.summary()
    if json_out:
        emit_json({"name": ds.name, "root": ds.root, **summary})
    else:
        out_console.print(_split_table(f"{ds.name}: {ds.root}", summary))
