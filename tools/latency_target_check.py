"""Latency-target pruning, timed again: does each pruned network hold its target beside the unpruned one?

Measures a ReID network's latency (random weights: latency depends on the shapes, not the values), then
``--repeats`` times prunes it to ``--fraction`` of that latency with ``prune --target-latency``'s search
(``reidcompress.prune.latency``) and times the result again, interleaved with the unpruned network in one
loop (``verify.latency.latency_ratio``, ``--retime-runs`` rounds), as ``bench`` and ``verify`` compare
models. Reports, per prune, the search's own interleaved ratio and the re-timed one, their run-to-run
spread, and whether the re-timed ratio is within ``--tolerance`` of the fraction; when the spread is larger
than the tolerance, it says the machine's noise exceeds it instead.

    PYTHONPATH=$PWD python tools/latency_target_check.py --arch resnet50 --batch 16 --threads 2 \\
        --fraction 0.6 --repeats 3 --json runs/latency_target_check.json

Each prune exports and times several levels of the network: on a quiet 2-core CPU a ResNet50 at batch 16
takes ~0.8 s a call, so the defaults take several minutes per prune.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from reidcompress._io import atomic_write_text
from reidcompress._parse import parse_size
from reidcompress.errors import ReidCompressError
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.prune import PruneOptions
from reidcompress.prune.latency import BackendTimer, LatencyTarget, prune_for_latency


def log(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def one_prune(model: ReIDNet, args: argparse.Namespace, target: LatencyTarget) -> dict[str, Any]:
    """Prune a copy of ``model`` to ``target``, then time it again interleaved with ``model``."""
    pruned = copy.deepcopy(model)
    start = time.perf_counter()
    record = prune_for_latency(pruned, args.method, PruneOptions(round_to=args.round_to), target, log=log)
    seconds = time.perf_counter() - start
    retime = dataclasses.replace(target, runs=args.retime_runs)
    again = BackendTimer(retime).ratio(pruned, model)
    lat = record["latency_target"]
    deviation = again.ratio / args.fraction - 1
    return {
        "flops_ratio": record["flops_ratio"],
        "search_seconds": seconds,
        "search": {"target_ratio": lat["target_ratio"], **lat["interleaved"], "checks": len(lat["checks"])},
        "search_verdict": {"within": lat["within_tolerance"], "noise_exceeds": lat["noise_exceeds_tolerance"]},
        "retimed": again.to_dict(),
        "deviation_from_fraction": deviation,
        "within_tolerance": abs(deviation) <= args.tolerance,
        "noise_exceeds_tolerance": again.spread > args.tolerance,
    }


def verdict(row: dict[str, Any], tol: float) -> str:
    r = row["retimed"]
    dev = row["deviation_from_fraction"]
    text = f"re-timed {r['ratio']:.3f} of the unpruned ({dev:+.1%}, spread {r['spread']:.1%})"
    if row["noise_exceeds_tolerance"]:
        return f"{text}: the machine's run-to-run spread exceeds the {tol:.0%} tolerance"
    return f"{text}: {'within' if row['within_tolerance'] else 'NOT within'} {tol:.0%}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--method", default="hao_li")
    ap.add_argument("--input-size", type=parse_size, default=(256, 128))
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.6, help="target: this share of the unpruned latency")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10, help="timed calls per level during the search")
    ap.add_argument("--retime-runs", type=int, default=8, help="interleaved rounds of the re-timing")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = ReIDNet(ReIDConfig(arch=args.arch, input_size=tuple(args.input_size))).eval()
    base = LatencyTarget(1.0, backend=args.backend, batch=args.batch, threads=args.threads,
                         tolerance=args.tolerance, warmup=args.warmup, runs=args.runs)  # fmt: skip
    rows = []
    for i in range(args.repeats):
        # The target in ms, as a user would set it: the fraction of the unpruned latency measured just before.
        unpruned = BackendTimer(base)(model).p50_ms
        target = dataclasses.replace(base, target_ms=args.fraction * unpruned)
        print(f"prune {i + 1}/{args.repeats}: unpruned {unpruned:.2f} ms, target {target.target_ms:.2f} ms",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            row = {"unpruned_ms": unpruned, "target_ms": target.target_ms, **one_prune(model, args, target)}
            print(f"prune {i + 1}: {verdict(row, args.tolerance)}", file=sys.stderr, flush=True)
        except ReidCompressError as e:  # e.g. the load fell so far that the unpruned network met the target
            row = {"unpruned_ms": unpruned, "target_ms": target.target_ms, "error": str(e)}
            print(f"prune {i + 1}: error: {e}", file=sys.stderr, flush=True)
        rows.append(row)
    result = {"args": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                       for k, v in vars(args).items()}, "prunes": rows}  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
