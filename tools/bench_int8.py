"""ONNX Runtime CPU latency of fp32 vs INT8 models, unpruned vs pruned, with the CPU flags they ran on.

Builds (or reuses, in ``--work``) a checkpoint, prunes it (``--method``, ``--target-flops``), exports both
to ONNX, quantises both to INT8 (``export.quantize``, as ``reidcompress export --int8`` does) and times
the four models interleaved (``verify.latency.compare_latency``) at each batch size, so load from
elsewhere on the machine hits them alike. Random weights are enough for latency (it depends on the
shapes); INT8 calibration then runs on a small synthetic set rendered at the input size.

    PYTHONPATH=$PWD python tools/bench_int8.py --work runs/int8 --arch resnet50 --input-size 256x128 \\
        --threads 2 --batches 1,16 --runs 20 [--int8-format auto|u8s8|u8s8-rr|s8s8|trt]

``--int8-format auto`` (the default) is this CPU's format (``detect_int8_format``); the table says
which. Timing ``trt`` here measures ONNX Runtime's CPU kernels on a TensorRT-bound model, not TensorRT.

Goals (issue 9): INT8 >= 2.5x faster than fp32 at batch 16; pruned + INT8 >= 5x faster than unpruned fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from reidcompress.export.calibration import calibration_batches, reference_images
from reidcompress.export.onnx import export_onnx
from reidcompress.export.quantize import detect_int8_format, quantize_onnx
from reidcompress.models.checkpoint import save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.prune import PruneOptions, prune_checkpoint
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.verify.environment import environment
from reidcompress.verify.latency import MEASURE_SPINNING, compare_latency


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def models(args: argparse.Namespace, fmt: str) -> dict[str, Path]:
    """The four ONNX models, built once in --work."""
    w: Path = args.work
    w.mkdir(parents=True, exist_ok=True)
    size = tuple(args.input_size)
    ckpt = args.checkpoint or w / f"{args.arch}.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        save_model(ckpt, ReIDNet(ReIDConfig(arch=args.arch, input_size=size)).eval())
    suffix = (
        f"-r{args.round_to}" + ("-residual" if args.residual else "")
        if (args.round_to, args.residual) != (8, False)
        else ""
    )
    pruned = w / f"{ckpt.stem}-{args.method}-{args.target_flops:g}{suffix}.pt"
    if not pruned.exists():
        options = PruneOptions(target_flops=args.target_flops, round_to=args.round_to, residual=args.residual)
        prune_checkpoint(ckpt, pruned, args.method, options)
    calib = args.calib_data or w / "calib"
    if not calib.exists():
        from reidcompress.data.synth import synthesize

        synthesize(calib, ids=24, cams=3, images_per_id=8, seed=0, size=size)
    out = {}
    for name, src in (("fp32", ckpt), ("pruned fp32", pruned)):
        fp32 = w / f"{src.stem}.onnx"
        if not fp32.exists():
            log(f"exporting {fp32}")
            export_onnx(src, fp32, parity_data=calib)
        int8 = w / f"{src.stem}.int8-{args.calib_method}-{fmt}.onnx"
        if not int8.exists():
            log(f"quantising {int8}")
            batches = calibration_batches(calib, size, num_images=args.calib_images, batch_size=16)
            images = reference_images(size, calib)
            res = quantize_onnx(
                fp32, int8, batches, method=args.calib_method, fmt=args.int8_format, parity_images=images
            )
            log(res.summary())
        out[name], out[name.replace("fp32", "int8")] = fp32, int8
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    fmt, reason = detect_int8_format() if args.int8_format == "auto" else (args.int8_format, "chosen by hand")
    paths = models(args, fmt)
    embedders = {name: OnnxEmbedder(p, threads=args.threads, spinning=MEASURE_SPINNING) for name, p in paths.items()}
    load_before = os.getloadavg()
    rows = []
    for b in args.batches:
        stats = compare_latency(embedders, b, warmup=args.warmup, runs=args.runs, max_seconds=args.max_seconds)
        p50 = {name: s.p50_ms for name, s in stats.items()}
        rows.append(
            {
                "batch": b,
                "p50_ms": p50,
                "p95_ms": {name: s.p95_ms for name, s in stats.items()},
                "runs": {name: s.runs for name, s in stats.items()},
                "int8_speedup": p50["fp32"] / p50["int8"],
                "pruned_int8_speedup": p50["fp32"] / p50["pruned int8"],
                "pruned_fp32_speedup": p50["fp32"] / p50["pruned fp32"],
                "pruned_int8_vs_pruned_fp32": p50["pruned fp32"] / p50["pruned int8"],
            }
        )
        log(json.dumps(rows[-1]))
    for emb in embedders.values():
        emb.close()
    return {
        "arch": args.arch,
        "input_size": list(args.input_size),
        "method": args.method,
        "target_flops": args.target_flops,
        "round_to": args.round_to,
        "residual": args.residual,
        "calib_method": args.calib_method,
        "int8_format": fmt,
        "int8_format_reason": reason,
        "threads": args.threads,
        "models": {k: str(v) for k, v in paths.items()},
        "results": rows,
        "load_average_before_after": [load_before, os.getloadavg()],
        "environment": environment("cpu", args.threads),
    }


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        f"{res['arch']} {res['input_size'][0]}x{res['input_size'][1]}, ONNX Runtime {env['onnxruntime']} CPU, "
        f"{res['threads']} threads, {env['cpu']} (flags: {', '.join(env['cpu_flags'])}); p50 ms, interleaved; "
        f"INT8 format {res['int8_format']} ({res['int8_format_reason']})",
        "",
        "| batch | fp32 | INT8 | pruned fp32 | pruned INT8 | INT8 speed-up | pruned+INT8 speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["results"]:
        p = r["p50_ms"]
        lines.append(
            f"| {r['batch']} | {p['fp32']:.1f} | {p['int8']:.1f} | {p['pruned fp32']:.1f} | {p['pruned int8']:.1f} "
            f"| {r['int8_speedup']:.2f}x | {r['pruned_int8_speedup']:.2f}x |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/int8"))
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained checkpoint (default: random weights)")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--input-size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(256, 128))
    ap.add_argument("--method", default="hao_li")
    ap.add_argument("--target-flops", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--calib-data", type=Path, default=None)
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--calib-method", default="minmax")
    ap.add_argument("--int8-format", default="auto", help="auto (this CPU's), u8s8, u8s8-rr, s8s8 or trt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    res = run(args)
    print(json.dumps(res) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
