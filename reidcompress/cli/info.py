"""``reidcompress info``: architecture, size, FLOPs, widths and pruning record of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reidcompress.cli._common import emit_json, handle_errors, out_console
from reidcompress.models.checkpoint import load_model
from reidcompress.models.summary import model_summary
from reidcompress.prune.latency import latency_summary


def model_info(path: Path) -> dict[str, Any]:
    return {"path": str(path), **model_summary(load_model(path))}


def _table(info: dict[str, Any]) -> Table:
    t = Table(title=info["path"], show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row(
        "architecture",
        f"{info['arch']} (last stride {info['last_stride']}, {info['pooling']} pool, neck {info['neck']})",
    )
    t.add_row(
        "parameters",
        f"{info['params'] / 1e6:.3f} M (inference; {info['params_with_classifier'] / 1e6:.3f} M with classifier)",
    )
    h, w = info["input_size"]
    flops = f"{info['flops'] / 1e9:.3f} GFLOPs = {info['macs'] / 1e9:.3f} GMACs at {h}x{w}, batch 1"
    t.add_row("FLOPs", flops)
    t.add_row("embedding", f"{info['embedding_dim']}-d")
    t.add_row("ID classes", str(info["num_classes"]))
    pre = info["preprocessing"]
    t.add_row("preprocessing", f"mean {pre['mean']} std {pre['std']} on {pre['input']}")
    for stage, widths in info["stage_widths"].items():
        t.add_row(f"widths {stage}", " ".join(map(str, widths)))
    pr = info["pruning"]
    t.add_row(
        "pruning", "none" if not pr else ", ".join(f"{k}={v}" for k, v in pr.items() if not isinstance(v, dict | list))
    )
    if pr and (lat := pr.get("latency_target")):
        t.add_row("latency target", latency_summary(lat))
    if pr and (sens := pr.get("sensitivity")):
        t.add_row("per-layer rates", f"from {sens['file']} ({sens['method']}, {sens['metric']} drops)")
    return t


@handle_errors
def info_cmd(
    model: Annotated[Path, typer.Argument(help="A reidcompress checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show architecture, parameters, FLOPs (and MACs), stage widths, embedding and pruning record."""
    info = model_info(model)
    if json_out:
        emit_json(info)
    else:
        out_console.print(_table(info))
