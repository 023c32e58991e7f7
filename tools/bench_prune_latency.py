"""ONNX Runtime CPU latency of a ReID ResNet before and after pruning, compared with its FLOPs.

The pruning is only worth its name if latency drops with the FLOPs. This measures both networks in one
run (interleaved, so that machine drift hits both alike) and checks that the latency speedup is at least
``--efficiency`` of the FLOPs reduction: ``latency_ratio <= flops_ratio / efficiency``.

    PYTHONPATH=$PWD python tools/bench_prune_latency.py --arch resnet50 --method hao_li \\
        --target-flops 0.5 --batch 16 --threads 2 --runs 20 --json

Random weights are enough: latency depends on the shapes, not on the values.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from reidcompress.export.onnx import export_onnx
from reidcompress.models.checkpoint import save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.prune import PruneOptions, prune_model
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.verify.latency import MEASURE_SPINNING, compare_latency


def onnx_model(model: ReIDNet, tmp: Path, name: str, threads: int) -> OnnxEmbedder:
    """The model as `reidcompress export` writes it (simplified, parity-checked), in ONNX Runtime."""
    onnx_path = export_onnx(save_model(tmp / f"{name}.pt", model), tmp / f"{name}.onnx").path
    return OnnxEmbedder(onnx_path, threads=threads, spinning=MEASURE_SPINNING)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--method", default="hao_li")
    ap.add_argument("--target-flops", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--input-size", default="256x128")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--efficiency", type=float, default=0.85)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.input_size.split("x"))
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    original = ReIDNet(ReIDConfig(arch=args.arch, input_size=(h, w))).eval()
    pruned = ReIDNet(ReIDConfig(arch=args.arch, input_size=(h, w)))
    pruned.load_state_dict(original.state_dict())
    options = PruneOptions(target_flops=args.target_flops, round_to=args.round_to)
    record = prune_model(pruned, args.method, options)
    with tempfile.TemporaryDirectory() as tmp:
        embedders = {
            name: onnx_model(m, Path(tmp), name, args.threads)
            for name, m in (("original", original), ("pruned", pruned))
        }
        stats = compare_latency(embedders, args.batch, warmup=args.warmup, runs=args.runs, max_seconds=600)
        for emb in embedders.values():
            emb.close()
    med = {k: s.p50_ms for k, s in stats.items()}
    flops_ratio = record["flops_after"] / record["flops_before"]
    latency_ratio = med["pruned"] / med["original"]
    result = {
        "arch": args.arch,
        "method": args.method,
        "input_size": [h, w],
        "batch": args.batch,
        "threads": args.threads,
        "runs": args.runs,
        "latency_ms_median": med,
        "latency_ms_p95": {k: s.p95_ms for k, s in stats.items()},
        "latency_ms_min": {k: s.min_ms for k, s in stats.items()},
        "flops": {"original": record["flops_before"], "pruned": record["flops_after"]},
        "flops_ratio": flops_ratio,
        "latency_ratio": latency_ratio,
        "speedup_efficiency": (1 / latency_ratio) / (1 / flops_ratio),
        "passes": latency_ratio <= flops_ratio / args.efficiency,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.arch} {args.method} @ {h}x{w}, batch {args.batch}, {args.threads} threads: "
            f"FLOPs ratio {flops_ratio:.3f}, ORT latency {med['original']:.1f} -> {med['pruned']:.1f} ms "
            f"(ratio {latency_ratio:.3f}); {'PASS' if result['passes'] else 'FAIL'} "
            f"(needs <= {flops_ratio / args.efficiency:.3f})"
        )
    return 0 if result["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
