"""``reidcompress evaluate``: rank-1/5/10, mAP and mINP of a model on a dataset's query/gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reidcompress.cli._common import emit_json, handle_errors, out_console
from reidcompress.evaluation.features import evaluate_model


@handle_errors
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Model file: .pt checkpoint, .onnx or .engine.")],
    data: Annotated[Path, typer.Option(help="Dataset root folder.")],
    dataset: Annotated[str, typer.Option(help="Dataset layout (market1501, dukemtmcreid, cuhk03np, msmt17).")] = (
        "market1501"
    ),
    metric: Annotated[str, typer.Option(help="euclidean | cosine")] = "euclidean",
    flip: Annotated[bool, typer.Option(help="Average embeddings with the mirrored image.")] = False,
    rerank: Annotated[bool, typer.Option(help="Also report k-reciprocal re-ranking (Zhong et al. 2017).")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 64,
    cache: Annotated[bool, typer.Option(help="Reuse cached features (keyed by model hash and file list).")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate MODEL with the Market-1501 protocol (same-id same-camera gallery items excluded)."""
    res = evaluate_model(
        model,
        data,
        dataset=dataset,
        device=device,
        use_cache=cache,
        metric=metric,
        flip=flip,
        batch_size=batch_size,
        rerank=rerank,
        progress=not json_out,
    )
    if json_out:
        emit_json({"model": str(model), "dataset": dataset, **res})
        return
    t = Table(title=f"{model.name} on {data}")
    for col in ("", "rank-1", "rank-5", "rank-10", "mAP", "mINP"):
        t.add_column(col, justify="right")
    rows: list[tuple[str, Any]] = [("plain", res)] + ([("re-ranked", res["rerank"])] if rerank else [])
    for name, r in rows:
        t.add_row(name, *(f"{r[k]:.2f}" for k in ("rank1", "rank5", "rank10", "mAP", "mINP")))
    out_console.print(t)
