"""``reidcompress prune``: structural pruning of a checkpoint with one of the registered methods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reidcompress.cli._common import console, emit_json, handle_errors, out_console
from reidcompress.errors import InputError
from reidcompress.prune.api import prune_with_settings
from reidcompress.prune.latency import LatencyTarget, latency_summary

_LAT = "Latency target (--target-latency)"


def _table(res: dict[str, Any]) -> Table:
    t = Table(title=f"{res['method']}: {res['checkpoint']} -> {res['out']}")
    for col in ("", "before", "after", "ratio"):
        t.add_column(col, justify="right" if col else "left")
    f0, f1 = res["flops_before"], res["flops_after"]
    t.add_row("GFLOPs", f"{f0 / 1e9:.3f}", f"{f1 / 1e9:.3f}", f"{f1 / f0:.3f}")
    p0, p1 = res["params_before"], res["params_after"]
    t.add_row("params (M)", f"{p0 / 1e6:.3f}", f"{p1 / 1e6:.3f}", f"{p1 / p0:.3f}")
    t.add_row("embedding", str(res["embedding_dim"]), str(res["embedding_dim"]), "1.000")
    if lat := res.get("latency_target"):
        m0, m1 = lat["unpruned_ms"], lat["measured_ms"]
        t.add_row(f"p50 ms ({lat['backend']}, batch {lat['batch']})", f"{m0:.2f}", f"{m1:.2f}", f"{m1 / m0:.3f}")
    return t


@handle_errors
def prune_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A reidcompress checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the pruned checkpoint.")],
    method: Annotated[
        str | None, typer.Option("--method", "-m", help="Pruning method (see `reidcompress methods`).")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="A recipe (models/NAME.json or a path): its prune section gives the method, amount, scope, "
            "round-to and residual not set here; its finetune section the training of training-time methods."
        ),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Fraction of channels removed per group, in [0, 1).")] = None,
    target_flops: Annotated[
        float | None, typer.Option(help="Fraction of the FLOPs to keep, in (0, 1]; lands within 2%.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset root for calibration/training.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset layout under --data.")] = "market1501",
    epochs: Annotated[
        int, typer.Option(help="Training epochs of training-time methods (afp/play_and_prune: at most one per step).")
    ] = 0,
    scope: Annotated[
        str | None, typer.Option(help="local (same rate per group) | global (one ranking). [default: local]")
    ] = None,
    round_to: Annotated[
        int | None, typer.Option(help="Kept channel counts are multiples of this. [default: 8]")
    ] = None,
    residual: Annotated[
        bool | None,
        typer.Option("--residual/--no-residual", help="Also prune the coupled residual channels. [default: no]"),
    ] = None,
    steps: Annotated[int, typer.Option(help="One-shot methods: prune in this many increments.")] = 1,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after each pruning step.")] = 0,
    calib_batches: Annotated[int, typer.Option(help="Calibration batches for data-driven criteria.")] = 8,
    decay: Annotated[float, typer.Option(help="psfp: how fast the rate approaches the target.")] = 5.5,
    weak_scale: Annotated[
        float, typer.Option(help="auto_balanced: magnitude the weak channels are driven to before removal.")
    ] = 0.01,
    holdout: Annotated[
        float, typer.Option(help="afp/play_and_prune: fraction of training identities held out to measure mAP on.")
    ] = 0.2,
    accuracy_tolerance: Annotated[
        float, typer.Option(help="afp/play_and_prune: held-out mAP points a pruning step may lose.")
    ] = 2.0,
    device: Annotated[str, typer.Option(help="cpu | cuda[:N] for calibration, training and latency.")] = "cpu",
    sensitivity: Annotated[
        Path | None,
        typer.Option(help="sensitivity.json from `reidcompress sensitivity`: per-layer rates for the target."),
    ] = None,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Median latency to meet, in ms: the level is searched (within 5%).", rich_help_panel=_LAT),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="onnxruntime (the exported ONNX; default) | torch | tensorrt (an fp16 engine).", rich_help_panel=_LAT
        ),
    ] = None,
    batch: Annotated[int | None, typer.Option(help="Batch size timed (default 1).", rich_help_panel=_LAT)] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads while timing.", rich_help_panel=_LAT)] = None,
    latency_runs: Annotated[int, typer.Option(help="Timed runs per level.", rich_help_panel=_LAT)] = 30,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Remove channels (FLOPs, parameters and latency drop); the embedding size never changes.

    Give the amount as --rate, --target-flops, or --target-latency MS (measured on --backend, this machine).
    """
    latency = _latency_target(target_latency, backend, batch, threads, latency_runs, device)
    settings = dict(method=method, rate=rate, target_flops=target_flops, scope=scope, round_to=round_to,
                    residual=residual, steps=steps, finetune_epochs=finetune_epochs, epochs=epochs,
                    calib_batches=calib_batches, decay=decay, weak_scale=weak_scale, holdout=holdout,
                    accuracy_tolerance=accuracy_tolerance)  # fmt: skip
    with console.status(f"pruning with {method or 'the recipe'}..."):
        res = prune_with_settings(
            checkpoint,
            out,
            settings,
            recipe=recipe,
            sensitivity=sensitivity,
            latency=latency,
            data_root=data,
            dataset=dataset,
            device=device,
            log=lambda line: console.print(f"  {line}"),
        )
    if res.get("target_met") is False and latency is None:
        ratio, target = res["flops_ratio"], res["target_flops"]
        console.print(f"[yellow]warning: FLOPs ratio {ratio:.3f} is not within 2% of {target}")
    if lat := res.get("latency_target"):
        console.print(("" if res["target_met"] else "[yellow]warning: ") + latency_summary(lat))
    if json_out:
        emit_json({k: v for k, v in res.items() if k != "previous"})
    else:
        out_console.print(_table(res))


def _latency_target(
    target_ms: float | None, backend: str | None, batch: int | None, threads: int | None, runs: int, device: str
) -> LatencyTarget | None:
    if target_ms is None:
        if backend is not None or batch is not None or threads is not None:
            raise InputError("--backend, --batch and --threads set how --target-latency is measured: give it too")
        return None
    return LatencyTarget(
        target_ms, backend=backend or "onnxruntime", batch=batch or 1, threads=threads, device=device, runs=runs
    )
