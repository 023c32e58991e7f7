"""``reidcompress bench``: latency/throughput per model and batch size on this device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reidcompress.cli._common import console, emit_json, handle_errors, out_console, parse_ints, set_threads
from reidcompress.verify.bench import bench, plot_bench


@handle_errors
def bench_cmd(
    models: Annotated[list[Path], typer.Argument(help="Model files (.pt, .onnx, .engine).")],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    device: Annotated[str, typer.Option(help="cpu | cuda | tensorrt (ONNX Runtime EP) | auto.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 5,
    runs: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 30,
    max_seconds: Annotated[float, typer.Option(help="Stop timing a batch size after this long (>= 3 runs).")] = 30.0,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Also time each PyTorch checkpoint in fp16 (needs --device cuda).")
    ] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a latency plot (PNG/SVG/PDF).")] = None,
    reports: Annotated[
        list[Path] | None, typer.Option("--reports", help="verify.json files: adds rank-1 vs latency to the plot.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time MODELS at each batch size: median (p50) and spread over many runs after warm-up."""
    set_threads(threads)
    result = bench(
        models,
        parse_ints(batch_sizes, "--batch-sizes"),
        device=device,
        threads=threads,
        warmup=warmup,
        runs=runs,
        max_seconds=max_seconds,
        fp16=fp16,
    )
    if plot is not None:
        console.print(f"plot: {plot_bench(result, plot, reports or [])}")
    if json_out:
        emit_json(result)
        return
    t = Table(title=f"latency on {result['environment'].get('gpu') or result['environment']['cpu']}")
    for col in ("model", "backend", "GFLOPs", "params M", "batch", "p50 ms", "p95 ms", "std ms", "img/s"):
        t.add_column(col, justify="right")
    for r in result["results"]:
        gf = f"{r['flops'] / 1e9:.3f}" if r["flops"] else "-"
        pm = f"{r['params'] / 1e6:.2f}" if r["params"] else "-"
        t.add_row(
            Path(r["model"]).name,
            f"{r['backend']} {r.get('precision', 'fp32')}",
            gf,
            pm,
            str(r["batch"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['std_ms']:.2f}",
            f"{r['images_per_s']:.1f}",
        )
    out_console.print(t)
