"""``reidcompress import``: torchvision / torchreid (and boxmot) / fast-reid checkpoints into our format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reidcompress._io import check_output_path
from reidcompress.cli._common import console, emit_json, handle_errors, parse_size
from reidcompress.models.importers import import_checkpoint
from reidcompress.models.reid import MODEL_DEFAULTS
from reidcompress.models.summary import model_summary


@handle_errors
def import_cmd(
    src: Annotated[Path, typer.Argument(help="Checkpoint file to convert.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="torchvision | torchreid | fastreid")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the reidcompress checkpoint.")],
    arch: Annotated[
        str,
        typer.Option(help="Architecture of the source weights, as torchreid names it (osnet_x1_0, resnet50_ibn_a...)."),
    ] = MODEL_DEFAULTS.arch,
    last_stride: Annotated[int | None, typer.Option(help="Override the format's last stride (1 or 2).")] = None,
    pooling: Annotated[str | None, typer.Option(help="avg | gem (fast-reid's fixed-p GeM has no key).")] = None,
    input_size: Annotated[str, typer.Option(help="Model input HEIGHTxWIDTH.")] = "{}x{}".format(
        *MODEL_DEFAULTS.input_size
    ),
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Convert a checkpoint another framework trained into a reidcompress checkpoint."""
    check_output_path(out, src)
    model = import_checkpoint(
        src, fmt, arch, out, last_stride=last_stride, pooling=pooling, input_size=parse_size(input_size)
    )
    summary = model_summary(model)
    if json_out:
        emit_json({"out": str(out), **summary})
    else:
        console.print(
            f"imported {fmt} {arch} -> {out}: {summary['params'] / 1e6:.2f}M params, "
            f"embedding {summary['embedding_dim']}, neck {summary['neck']}, last stride {summary['last_stride']}"
        )
