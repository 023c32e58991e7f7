"""The survey's Table 5 on synthetic data: every pruning method at half the FLOPs against the baseline.

Trains a small ReID network on a synthetic Market-1501-style dataset (``reidcompress.data.synth``),
then, from that same baseline, prunes with each method to ``--target-flops`` of its FLOPs and trains
for the same post-pruning budget of ``--epochs`` epochs (one-shot methods: fine-tuning; soft and
progressive methods: their pruning epochs; auto-balanced: two thirds regularised training, one third
fine-tuning after removal). Writes a Markdown table (params, FLOPs, rank-1, mAP) and the command.

    PYTHONPATH=$PWD python tools/table5_synthetic.py --work runs/table5 --doc docs/table5_synthetic.md

The synthetic data and the baseline are cached in ``--work``; a second run reuses them.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from reidcompress._io import atomic_write_text
from reidcompress.data.datasets import ReIDDataset, load_dataset
from reidcompress.data.synth import synthesize
from reidcompress.evaluation.features import evaluate_model
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.summary import count_flops, count_params
from reidcompress.prune import PruneData, PruneOptions, get_method, list_methods, prune_model
from reidcompress.train.config import TrainConfig
from reidcompress.train.engine import train


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset(args: argparse.Namespace) -> ReIDDataset:
    root = args.work / "synth"
    if not root.exists():
        h, w = args.size
        synthesize(root, ids=args.ids, cams=args.cams, images_per_id=args.images_per_id, seed=args.seed, size=(h, w))
    return load_dataset(root)


def baseline(args: argparse.Namespace, data: ReIDDataset) -> ReIDNet:
    path = args.work / f"baseline-{args.arch}.pt"
    if path.exists():
        return load_model(path)
    torch.manual_seed(args.seed)
    model = ReIDNet(ReIDConfig(arch=args.arch, num_classes=data.num_train_pids, input_size=tuple(args.size)))
    config = TrainConfig.for_epochs(args.baseline_epochs, lr=args.lr, num_workers=0, seed=args.seed, eval_every=0)
    train(model, data.train, config, device=args.device)
    save_model(path, model)
    return model.eval()


def row(name: str, model: ReIDNet, data: ReIDDataset, device: str, flops0: int) -> dict[str, Any]:
    metrics = evaluate_model(model, data, device=device)
    flops = count_flops(model.cpu(), model.config.input_size)
    return {
        "network": name,
        "params_M": count_params(model) / 1e6,
        "MFLOPs": flops / 1e6,
        "flops_ratio": flops / flops0,
        "rank1": float(metrics["rank1"]),
        "mAP": float(metrics["mAP"]),
    }


def method_options(method: str, args: argparse.Namespace) -> PruneOptions:
    common: dict[str, Any] = {
        "target_flops": args.target_flops,
        "round_to": args.round_to,
        "residual": args.residual,
        "scope": args.scope,
    }
    strategy = get_method(method).strategy
    if strategy == "oneshot":
        return PruneOptions(**common, finetune_epochs=args.epochs)
    if strategy == "regularised":
        tail = args.epochs // 3
        return PruneOptions(**common, epochs=args.epochs - tail, finetune_epochs=tail)
    return PruneOptions(**common, epochs=args.epochs)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = dataset(args)
    base = baseline(args, data)
    flops0 = count_flops(base, base.config.input_size)
    prune_data = PruneData(
        items=tuple(data.train), seed=args.seed, device=args.device, train_options={"lr": args.finetune_lr}
    )
    rows = [row(f"{args.arch} (baseline)", base, data, args.device, flops0)]
    control = copy.deepcopy(base)
    prune_data.fit(control, args.epochs)
    rows.append(row(f"{args.arch} + {args.epochs} epochs, unpruned", control, data, args.device, flops0))
    for method in args.methods:
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        model = copy.deepcopy(base)
        prune_model(model, method, method_options(method, args), prune_data)
        rows.append(row(method, model, data, args.device, flops0))
        save_model(args.work / f"{method}.pt", model.cpu())
        log(f"{method}: {json.dumps(rows[-1])} ({time.perf_counter() - start:.0f} s)")
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    h, w = args.size
    head = [
        "# Table 5 on synthetic data",
        "",
        "The survey's Table 5 (Masson et al., arXiv 1907.02547) reproduced in miniature: a small ReID network "
        "trained on synthetic Market-1501-style data, pruned by every method to half its FLOPs, against the "
        "unpruned baseline. Random synthetic people and a CPU-sized network: compare the methods with each "
        "other and with the baseline, not with the survey's absolute numbers.",
        "",
        f"- data: `reidcompress.data.synth`, {args.ids} identities (half train, half test), {args.cams} cameras, "
        f"{args.images_per_id} images per identity, {h}x{w}, seed {args.seed}",
        f"- network: `{args.arch}` at {h}x{w}, trained {args.baseline_epochs} epochs (Adam, lr {args.lr}, "
        "strong-baseline schedule scaled to the epochs, triplet + ID loss)",
        f"- pruning: `--target-flops {args.target_flops} --round-to {args.round_to} --scope {args.scope} "
        f"{'--residual' if args.residual else '--no-residual'}`, then {args.epochs} epochs per method "
        f"(lr {args.finetune_lr}): fine-tuning for one-shot methods, soft-pruning epochs for `psfp`/`fpgm_soft`, "
        f"{args.epochs - args.epochs // 3} regularised + {args.epochs // 3} fine-tuning epochs for `auto_balanced`",
        "- FLOPs: `torch.utils.flop_counter` (2 per multiply-add), batch 1; params exclude the ID classifier",
        "",
        "| network | params (M) | MFLOPs | FLOPs ratio | rank-1 (%) | mAP (%) |",
        "|---|---|---|---|---|---|",
    ]
    body = [
        f"| {r['network']} | {r['params_M']:.3f} | {r['MFLOPs']:.1f} | {r['flops_ratio']:.3f} | "
        f"{r['rank1']:.2f} | {r['mAP']:.2f} |"
        for r in rows
    ]
    tail = ["", "Produced by:", "", "```", command, "```", ""]
    return "\n".join(head + body + tail)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/table5"))
    ap.add_argument("--doc", type=Path, default=Path("docs/table5_synthetic.md"))
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(128, 64))
    ap.add_argument("--ids", type=int, default=200)
    ap.add_argument("--cams", type=int, default=6)
    ap.add_argument("--images-per-id", type=int, default=10)
    ap.add_argument("--baseline-epochs", type=int, default=120)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune-lr", type=float, default=3.5e-4)
    ap.add_argument("--target-flops", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=4)
    ap.add_argument("--scope", default="local")
    ap.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--methods", nargs="+", default=list_methods())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    command = "PYTHONPATH=$PWD python tools/table5_synthetic.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    rows = run(args)
    atomic_write_text(args.doc, markdown(rows, args, command))
    log(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
