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
    t = Table(title="pruning methods")
    # Method names are what people type: never wrapped; the long texts fold around them.
    t.add_column("method", no_wrap=True)
    for col in ("paper", "criterion", "strategy", "data", "training"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r["name"],
            r["paper"],
            r["criterion"],
            r["strategy"],
            "yes" if r["needs_data"] else "no",
            "yes" if r["needs_training"] else "no",
        )
    out_console.print(t)
