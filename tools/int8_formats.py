"""INT8 accuracy of every format on this CPU: min cosine to fp32 with ORT's integer kernels and as fake-quant.

Quantises an fp32 ONNX model in each format of ``INT8_FORMATS`` (reusing the files already in
``--work``), then compares each with fp32 on the same images, with this CPU's integer kernels and with
QDQ fusion off (``session.disable_quant_qdq``: the arithmetic TensorRT follows); ``--rank1`` adds the
rank-1 on the dataset's query/gallery split. Run it once natively (it quantises), then the same
command under an emulated CPU to see that CPU's kernels on the same models:

    PYTHONPATH=$PWD python tools/int8_formats.py model.onnx --data DIR --work runs/fmt
    qemu-x86_64 -cpu Haswell .venv/bin/python tools/int8_formats.py model.onnx --data DIR --work runs/fmt

Timings under an emulator mean nothing; accuracy is what the emulated CPU's kernels compute. Emulated,
a ResNet50 at 256x128 takes tens of minutes an image pass: add ``--kernels-only`` (fake-quant is the same
arithmetic on every CPU, so the native run has it) and a small ``--parity-images``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reidcompress.export.calibration import calibration_batches, reference_images
from reidcompress.export.onnx import read_metadata
from reidcompress.export.parity import compare_embeddings, embed_all
from reidcompress.export.quantize import INT8_FORMATS, detect_int8_format, quantize_onnx
from reidcompress.runtime.onnx_backend import OnnxEmbedder


def _rank1(embedder: OnnxEmbedder, data: Path) -> float:
    from reidcompress.data.datasets import load_dataset
    from reidcompress.evaluation.features import evaluate_embedder

    return float(evaluate_embedder(embedder, load_dataset(data), progress=False)["rank1"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    size = tuple(read_metadata(args.onnx)["input_size"])
    images = reference_images(size, args.data, n=args.parity_images)
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    with OnnxEmbedder(args.onnx) as fp32:
        reference = embed_all(fp32, images)  # once: under an emulator each pass of a ResNet50 takes many minutes
        if args.rank1:
            rows["fp32"] = {"rank1": _rank1(fp32, args.data)}
        for fmt in args.formats:
            path = args.work / f"{args.onnx.stem}.{fmt}.onnx"
            if not path.exists():
                batches = calibration_batches(args.data, size, num_images=args.calib_images, batch_size=16)
                quantize_onnx(args.onnx, path, batches, fmt=fmt)
            row: dict[str, Any] = {}
            for name, fake in (("kernels", False), ("fake_quant", True))[: 1 if args.kernels_only else 2]:
                with OnnxEmbedder(path, fake_quant=fake) as q:
                    row[f"{name}_min_cosine"] = compare_embeddings(reference, embed_all(q, images), 0.98).min_cosine
                    if args.rank1:
                        row[f"{name}_rank1"] = _rank1(q, args.data)
            rows[fmt] = row
            print(fmt, json.dumps(row), file=sys.stderr, flush=True)
    fmt, reason = detect_int8_format()
    return {"model": str(args.onnx), "images": len(images), "auto": fmt, "reason": reason, "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"{res['model']}: min cosine to fp32 on {res['images']} images; this CPU's format: {res['auto']} "
        f"({res['reason']})",
        "",
        "| format | integer kernels | fake-quant |",
        "|---|---|---|",
    ]
    for fmt, row in res["rows"].items():
        if fmt == "fp32":
            lines.append(f"| fp32 | rank-1 {row['rank1']:.2f} | |")
            continue
        cells = [
            "-"
            if f"{k}_min_cosine" not in row  # --kernels-only
            else f"{row[f'{k}_min_cosine']:.4f}" + (f", rank-1 {row[f'{k}_rank1']:.2f}" if f"{k}_rank1" in row else "")
            for k in ("kernels", "fake_quant")
        ]
        lines.append(f"| {fmt}{' (auto)' if fmt == res['auto'] else ''} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", type=Path, help="fp32 ONNX model written by `reidcompress export`")
    ap.add_argument("--data", type=Path, required=True, help="Market-1501-layout dataset (calibration and parity)")
    ap.add_argument("--work", type=Path, default=Path("runs/int8-formats"))
    ap.add_argument("--formats", type=lambda s: s.split(","), default=list(INT8_FORMATS))
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--parity-images", type=int, default=64)
    ap.add_argument("--rank1", action="store_true", help="also evaluate rank-1 on the query/gallery split")
    skip = "skip fake-quant (the same arithmetic on every CPU: measure it natively, not emulated)"
    ap.add_argument("--kernels-only", action="store_true", help=skip)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = measure(args)
    print(json.dumps(res) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
