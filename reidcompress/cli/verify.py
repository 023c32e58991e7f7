"""``reidcompress verify``: gate a release on accuracy, parity and latency (exit 1 when a tolerance breaks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reidcompress.cli._common import console, emit_json, handle_errors, out_console, parse_ints, set_threads
from reidcompress.verify.api import Tolerances, verify
from reidcompress.verify.report import model_rows, write_report


@handle_errors
def verify_cmd(
    reference: Annotated[Path, typer.Option(help="Reference model (.pt/.onnx/.engine), e.g. the unpruned baseline.")],
    candidate: Annotated[list[Path], typer.Option(help="Candidate model; repeat for several.")],
    data: Annotated[Path, typer.Option(help="Dataset root (query/gallery are evaluated).")],
    dataset: Annotated[str, typer.Option(help="Dataset layout.")] = "market1501",
    max_rank1_drop: Annotated[float, typer.Option(help="Largest allowed rank-1 drop, in points.")] = 1.0,
    max_map_drop: Annotated[float | None, typer.Option(help="Largest allowed mAP drop, in points.")] = None,
    min_cosine: Annotated[
        float | None, typer.Option(help="Smallest per-image cosine to the reference (same network only).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | tensorrt (ONNX Runtime EP) | auto.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads for inference.")] = None,
    latency_batches: Annotated[str, typer.Option(help="Batch sizes timed, e.g. 1,16.")] = "1,16",
    latency_runs: Annotated[int, typer.Option(help="Timed runs per batch size (after warm-up).")] = 30,
    metric: Annotated[str, typer.Option(help="euclidean | cosine")] = "euclidean",
    rerank: Annotated[bool, typer.Option(help="Also report k-reciprocal re-ranked accuracy.")] = False,
    cache: Annotated[bool, typer.Option(help="Reuse cached features.")] = True,
    report: Annotated[Path | None, typer.Option(help="Folder for verify.json and verify.md.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare candidates with a reference: rank-1/5, mAP, embedding parity, latency. Exit 1 if a tolerance breaks."""
    set_threads(threads)
    result = verify(
        reference,
        candidate,
        data,
        dataset=dataset,
        tolerances=Tolerances(max_rank1_drop, max_map_drop, min_cosine),
        device=device,
        threads=threads,
        latency_batches=parse_ints(latency_batches, "--latency-batches"),
        latency_runs=latency_runs,
        use_cache=cache,
        metric=metric,
        rerank=rerank,
        progress=not json_out,
    ).to_dict()
    if report is not None:
        js, md = write_report(result, report)
        console.print(f"report: {md} and {js}")
    if json_out:
        emit_json(result)
    else:
        out_console.print(_table(result))
    if not result["passed"]:
        raise typer.Exit(1)


def _table(result: dict) -> Table:
    t = Table(title=f"verify on {result['dataset']}: {'PASSED' if result['passed'] else 'FAILED'}")
    for col in ("model", "backend", "rank-1", "Δ", "mAP", "Δ", "min cos", "p50 b1 ms", "p50 bN ms", "img/s", ""):
        t.add_column(col, justify="right")
    for r in model_rows(result):
        f = lambda v, s=".2f": "-" if v is None else format(v, s)  # noqa: E731
        verdict = "ref" if r["role"] == "reference" else ("[green]pass" if r["passed"] else "[red]FAIL")
        t.add_row(
            r["model"],
            f"{r['backend']} {r['precision']}",
            f(r["rank1"]),
            f(r["rank1_drop"]),
            f(r["mAP"]),
            f(r["map_drop"]),
            f(r["min_cosine"], ".6f"),
            f(r["p50_b1_ms"]),
            f(r["p50_bn_ms"]),
            f(r["images_per_s"], ".1f"),
            verdict,
        )
    return t
