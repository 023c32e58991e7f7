"""Per-layer rates from a sensitivity analysis vs one uniform rate, at the same FLOPs, before fine-tuning.

The analysis runs on a validation set (``--val``: other identities than the test split, so the rates
are not chosen on the numbers they are judged by); both pruned networks are then evaluated on
``--data``'s query/gallery without any fine-tuning.

    PYTHONPATH=$PWD python tools/sensitivity_vs_uniform.py runs/bench9/small.pt --val runs/bench9/val \\
        --data runs/bench9/synth --rates 0.1,0.3,0.5,0.7,0.9 --targets 0.5,0.7 --report runs/bench9/sens

The analysis is resumable (``--report``): a second run reuses every measured layer and rate.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from reidcompress._io import atomic_write_text
from reidcompress.data.datasets import load_dataset
from reidcompress.evaluation.features import evaluate_embedder
from reidcompress.models.checkpoint import load_model
from reidcompress.prune import PruneOptions, prune_model
from reidcompress.prune.sensitivity import SensitivityProfile, analyse_sensitivity
from reidcompress.runtime import TorchEmbedder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--val", type=Path, required=True, help="dataset the sensitivity is measured on")
    ap.add_argument("--data", type=Path, required=True, help="dataset both pruned networks are evaluated on")
    ap.add_argument("--method", default="hao_li")
    ap.add_argument("--rates", type=lambda s: [float(v) for v in s.split(",")], default=[0.1, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--targets", type=lambda s: [float(v) for v in s.split(",")], default=[0.5])
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--report", type=Path, default=Path("runs/sensitivity"))
    args = ap.parse_args(argv)

    res = analyse_sensitivity(
        args.checkpoint, args.val, method=args.method, rates=args.rates, store=args.report / "results"
    )
    sens_json = args.report / "sensitivity.json"
    atomic_write_text(sens_json, json.dumps(res, indent=2))
    profile = SensitivityProfile.load(sens_json)
    test = load_dataset(args.data)
    base = load_model(args.checkpoint)
    rows: list[dict[str, Any]] = []
    for target in args.targets:
        for name, sensitivity in (("uniform", None), ("sensitivity", profile)):
            model = copy.deepcopy(base)
            options = PruneOptions(target_flops=target, round_to=args.round_to, sensitivity=sensitivity)
            record = prune_model(model, args.method, options)
            metrics = evaluate_embedder(TorchEmbedder(model), test, progress=False)
            rows.append(
                {
                    "target_flops": target,
                    "rates": name,
                    "flops_ratio": record["flops_ratio"],
                    "group_rates": record["group_rates"],
                    "rank1": metrics["rank1"],
                    "mAP": metrics["mAP"],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    unpruned = evaluate_embedder(TorchEmbedder(base), test, progress=False)
    print(f"unpruned: rank-1 {unpruned['rank1']:.2f}, mAP {unpruned['mAP']:.2f}")
    print("| FLOPs target | rates | FLOPs ratio | rank-1 before FT | mAP before FT |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target_flops']:g} | {r['rates']} | {r['flops_ratio']:.3f} | {r['rank1']:.2f} | {r['mAP']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
