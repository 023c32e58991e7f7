"""How much of a FLOPs cut becomes ONNX Runtime speed-up, per architecture (issue 18's table).

For each architecture: the unpruned network and ``hao_li --target-flops 0.5`` (block-internal
channels, the default; ``--residual`` for all), both exported to ONNX (fp32) and statically
quantised (INT8, calibrated on random images: latency only, accuracy is not measured here), timed
interleaved in ONNX Runtime on
the CPU (round-robin, so load elsewhere on the machine hits all models alike). Random weights:
latency does not depend on their values.

With ``--data`` (person images at the architectures' input size, e.g. ``reidcompress data synth D
--size 256x128``), the INT8 models are also checked for accuracy: every network's BatchNorm statistics
are first estimated on the data's training images (random filters, but activations in the ranges a
trained network's BatchNorms produce), INT8 is calibrated on those images, and the INT8 embeddings of
its query images are compared with fp32 (min cosine; ``export --int8`` gates at 0.98). No trained
weights of these networks can be downloaded here: this is the quantisation error of each graph, not of
a trained model.

    python tools/measure_pruned_speedup.py --arch osnet_x1_0 --arch resnet50_ibn_a --out /tmp/speedup
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from reidcompress.export.calibration import calibration_batches, reference_images
from reidcompress.export.onnx import model_metadata, write_onnx
from reidcompress.export.parity import check_parity
from reidcompress.export.quantize import quantize_onnx
from reidcompress.models.checkpoint import save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.summary import count_flops, count_params
from reidcompress.prune import PruneOptions, prune_model
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.verify.latency import compare_latency


@torch.no_grad()
def _estimate_norm_statistics(model: ReIDNet, batches: list[np.ndarray]) -> None:
    """BatchNorm running statistics as the cumulative average over ``batches`` (train-mode forwards)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for b in batches:
        model(torch.from_numpy(b))
    model.eval()


def _models(arch: str, target: float, out: Path, int8: bool, residual: bool, data: Path | None) -> dict[str, dict]:
    torch.manual_seed(0)
    base = ReIDNet(ReIDConfig(arch=arch)).eval()
    pruned = copy.deepcopy(base)
    record = prune_model(pruned, "hao_li", PruneOptions(target_flops=target, residual=residual))
    rows: dict[str, dict] = {}
    size = base.config.input_size
    if data is None:
        calib = [np.random.default_rng(0).random((8, 3, *size), dtype=np.float32)]
    else:
        calib = calibration_batches(data, size, num_images=128, batch_size=16)
        images = reference_images(size, data, n=64)
    for tag, model in (("unpruned", base), (f"hao_li {target}", pruned)):
        if data is not None:
            _estimate_norm_statistics(model, calib)
        # The checkpoint and the ONNX metadata make both files usable by `reidcompress` and tools/int8_formats.py.
        ckpt = save_model(out / f"{arch}-{tag.split()[0]}.pt", model)
        path = ckpt.with_suffix(".onnx")
        write_onnx(model, path, metadata=model_metadata(model, ckpt, "fp32"))
        rows[tag] = {"params": count_params(model), "flops": count_flops(model, model.config.input_size), "fp32": path}
        if int8:
            q = quantize_onnx(path, path.with_suffix(".int8.onnx"), calib)
            rows[tag]["int8"] = q.path
            if data is not None:
                with OnnxEmbedder(path) as a, OnnxEmbedder(q.path) as b:
                    rows[tag]["int8_min_cosine"] = check_parity(a, b, images, min_cosine=0.98).min_cosine
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
    ap.add_argument("--data", type=Path, help="person images: estimate BatchNorm statistics, calibrate, check INT8")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for arch in args.arch:
        rows = _models(arch, args.target, args.out, not args.no_int8, args.residual, args.data)
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
            if prec == "int8" and "int8_min_cosine" in rows[tag]:
                row["int8_min_cosine"] = rows[tag]["int8_min_cosine"]
            results.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "speedup.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
