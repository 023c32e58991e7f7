"""``reidcompress demo``: train, fine-tune, prune, export and verify on synthetic data, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reidcompress.cli._common import console, emit_json, handle_errors, out_console, parse_size
from reidcompress.demo import DemoConfig, run_demo
from reidcompress.demo.report import summary_table


@handle_errors
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where data, models and the report go.")] = Path("reidcompress-demo"),
    method: Annotated[str, typer.Option(help="Pruning method (see `reidcompress methods`).")] = "hao_li",
    target_flops: Annotated[float, typer.Option(help="Fraction of the FLOPs the pruned model keeps.")] = 0.5,
    arch: Annotated[str | None, typer.Option(help="Architecture (default: small; tiny with --quick).")] = None,
    input_size: Annotated[str | None, typer.Option(help="HEIGHTxWIDTH (default: 128x64; 64x32 with --quick).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke-test size: a tiny network, a few epochs.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the whole path on synthetic data: train, fine-tune, prune, fine-tune, export, verify, report.

    Re-running reuses finished stages; change an option and the stages it affects run again.
    Exits 1 when the verify stage fails (as `reidcompress verify` does), 0 otherwise.
    """
    overrides: dict[str, Any] = {"workdir": workdir, "method": method, "target_flops": target_flops, "threads": threads}
    if arch:
        overrides["arch"] = arch
    if input_size:
        overrides["input_size"] = parse_size(input_size)
    cfg = DemoConfig.quick_config(**overrides) if quick else DemoConfig(**overrides)
    summary = run_demo(cfg, console)
    if json_out:
        emit_json(summary)
    else:
        out_console.print(summary_table(summary))
        out_console.print(f"report: {summary['report']}  (wall time {summary['wall_seconds']:.0f} s)")
    if not summary["passed"]:
        typer.echo(f"error: verify failed: a tolerance broke (see {summary['report']})", err=True)
        raise typer.Exit(1)
