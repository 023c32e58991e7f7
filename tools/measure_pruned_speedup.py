"""How much of a FLOPs cut becomes ONNX Runtime speed-up, per architecture (issue 18's table).

For each architecture: the unpruned network and ``hao_li --target-flops 0.5`` (block-internal
channels, the default; ``--residual`` for all), both exported to ONNX (fp32) and statically
quantised (INT8, calibrated on random images: latency only, accuracy is not measured here), timed
interleaved in ONNX Runtime on
the CPU (round-robin, so load elsewhere on the machine hits all models alike). Random weights:
latency does not depend on their values.

    python tools/measure_pruned_speedup.py --arch osnet_x1_0 --arch resnet50_ibn_a --out /tmp/speedup
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from reidcompress.export.onnx import write_onnx
from reidcompress.export.quantize import quantize_onnx
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.summary import count_flops, count_params
from reidcompress.prune import PruneOptions, prune_model
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.verify.latency import compare_latency


def _models(arch: str, target: float, out: Path, int8: bool, residual: bool) -> dict[str, dict]:
    torch.manual_seed(0)
    base = ReIDNet(ReIDConfig(arch=arch)).eval()
    pruned = copy.deepcopy(base)
    record = prune_model(pruned, "hao_li", PruneOptions(target_flops=target, residual=residual))
    rows = {}
    calib = [np.random.default_rng(0).random((8, 3, *base.config.input_size), dtype=np.float32)]
    for tag, model in (("unpruned", base), (f"hao_li {target}", pruned)):
        path = out / f"{arch}-{tag.split()[0]}.onnx"
        write_onnx(model, path)
        rows[tag] = {"params": count_params(model), "flops": count_flops(model, model.config.input_size), "fp32": path}
        if int8:
            q = quantize_onnx(path, path.with_suffix(".int8.onnx"), calib)
            rows[tag]["int8"] = q.path
    rows["_record"] = {"flops_ratio": record["flops_ratio"], "embedding_dim": record["embedding_dim"]}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", required=True)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--residual", action="store_true", help="Also prune channels that leave a block.")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for arch in args.arch:
        rows = _models(arch, args.target, args.out, not args.no_int8, args.residual)
        record = rows.pop("_record")
        files = {f"{tag}/{prec}": r[prec] for tag, r in rows.items() for prec in ("fp32", "int8") if prec in r}
        embedders = {k: OnnxEmbedder(p, threads=args.threads, spinning=False) for k, p in files.items()}
        lat = {b: compare_latency(embedders, b, runs=args.runs, warmup=3, max_seconds=240) for b in (1, 16)}
        for key in files:
            tag, prec = key.split("/")
            row = {"arch": arch, "model": tag, "precision": prec, "params": rows[tag]["params"]}
            row["gflops"] = rows[tag]["flops"] / 1e9
            for b in (1, 16):
                row[f"p50_b{b}_ms"] = lat[b][key].p50_ms
                row[f"p50_b{b}_ratio"] = lat[b][key].p50_ms / lat[b][f"unpruned/{prec}"].p50_ms
            row["flops_ratio"] = rows[tag]["flops"] / rows["unpruned"]["flops"]
            row["embedding_dim"] = record["embedding_dim"]
            results.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "speedup.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
