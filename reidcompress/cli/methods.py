"""``reidcompress methods``: the registered pruning methods, their papers, criteria and strategies."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from reidcompress.cli._common import emit_json, handle_errors, out_console
from reidcompress.prune import get_method, list_methods


def methods_info() -> list[dict[str, Any]]:
    return [
        {k: v for k, v in dataclasses.asdict(get_method(name)).items() if k != "make_criterion"}
        for name in list_methods()
    ]


@handle_errors
def methods_cmd(json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """List the pruning methods: paper, criterion, strategy, and whether they need data or training."""
    rows = methods_info()
    if json_out:
        emit_json({"methods": rows})
        return
    out_console.print(_listing(rows))


def _needs(r: dict[str, Any]) -> str:
    if r["needs_training"]:
        return "needs --data and --epochs (prunes while training)"
    return "needs --data (calibration images)" if r["needs_data"] else "weights only"


def _listing(rows: list[dict[str, Any]]) -> Table:
    """One block per method: the name and how it runs on the first line, then its paper and criterion,
    so the long texts wrap at any terminal width instead of squeezing five columns."""
    t = Table(title="pruning methods", show_header=False, box=None, padding=(0, 1))
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    for r in rows:
        t.add_row(f"[bold]{r['name']}[/]", f"[cyan]{r['strategy']}[/], {_needs(r)}")
        t.add_row("", r["paper"])
        t.add_row("", f"[dim]{r['criterion']}[/]")
        t.add_row("", "")
    return t
