"""The survey's Table 5 on synthetic data: every pruning method at half the FLOPs against the baseline.

Trains a small ReID network on a synthetic Market-1501-style dataset (``reidcompress.data.synth``),
then, from that same baseline, prunes with each method to ``--target-flops`` of its FLOPs and trains
for the same post-pruning budget of ``--epochs`` epochs (one-shot methods: fine-tuning; soft and
progressive methods: their pruning epochs; auto-balanced: two thirds regularised training, one third
fine-tuning after removal; afp and play_and_prune: two thirds controller trials, one third fine-tuning).
Every fine-tune of a pruned network starts with a new ID classifier, as ``reidcompress finetune`` does.
Writes a Markdown table (params, FLOPs, rank-1, mAP) and the command.
The matrix is ``tools/reproduce_table5.py``'s (``reidcompress.survey.table5``) on one synthetic dataset.

    PYTHONPATH=$PWD python tools/table5_synthetic.py --work runs/table5 --doc docs/table5_synthetic.md

The synthetic data, the baseline and every row are kept in ``--work``; a second run reuses them.
``--methods`` and ``--no-control`` make a quicker partial table while developing a method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reidcompress._parse import parse_size
from reidcompress.data.synth import synthesize
from reidcompress.prune import list_methods
from reidcompress.prune.strategies.adaptive import split_controlled_budget
from reidcompress.survey import Overrides, Table5Config, run_table5, table5_markdown
from reidcompress.survey._tool import command_line, run_tool, write_report


def dataset(args: argparse.Namespace) -> Path:
    h, w = args.size
    root = args.work / f"synth-{args.ids}ids-{args.cams}cams-{args.images_per_id}-{h}x{w}-seed{args.seed}"
    if not root.exists():
        synthesize(root, ids=args.ids, cams=args.cams, images_per_id=args.images_per_id, seed=args.seed, size=(h, w))
    return root


def config(args: argparse.Namespace, root: Path) -> Table5Config:
    # From-scratch training on a CPU: a higher lr and a cosine schedule than the ImageNet-pretrained recipe.
    common = {"schedule": "cosine", "warmup_epochs": 1, "num_workers": 2, "seed": args.seed, "eval_every": 0}
    return Table5Config(
        work=args.work,
        datasets={"synthetic": (root, "market1501")},
        archs=(args.arch,),
        prune_arch=args.arch,
        methods=tuple(args.methods),
        changes=Overrides(
            input_size=tuple(args.size),
            train_epochs=args.baseline_epochs,
            finetune_epochs=args.epochs,
            train={**common, "lr": args.lr},
            finetune={**common, "lr": args.finetune_lr},
            prune={k: getattr(args, k) for k in ("target_flops", "round_to", "scope", "residual")},
        ),
        control=args.control,
        device=args.device,
    )


def intro(args: argparse.Namespace) -> list[str]:
    h, w = args.size
    trials, tail = split_controlled_budget(args.epochs)
    return [
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
        f"{args.epochs - args.epochs // 3} regularised + {args.epochs // 3} fine-tuning epochs for `auto_balanced`, "
        f"{trials} controller trials (those the pruning steps leave unused fine-tune on every training identity, "
        f"the held-out ones included) + {tail} fine-tuning epochs for `afp`/`play_and_prune`; every fine-tune of a "
        "pruned network starts with a new ID classifier, as `reidcompress finetune` does",
        "- FLOPs: `torch.utils.flop_counter` (2 per multiply-add), batch 1; params exclude the ID classifier",
        "- Pruning only the block-internal channels, as the survey does, leaves the stem, the residual stream and "
        "the embedding whole; in a network with one block per stage these carry a large share of the FLOPs, so "
        "halving the FLOPs removes more of the internal channels than the ~50% a ResNet50 needs.",
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/table5"))
    ap.add_argument("--doc", type=Path, default=Path("docs/table5_synthetic.md"))
    ap.add_argument("--arch", default="small")
    ap.add_argument("--size", type=parse_size, default=(128, 64))
    ap.add_argument("--ids", type=int, default=150)
    ap.add_argument("--cams", type=int, default=6)
    ap.add_argument("--images-per-id", type=int, default=16)
    ap.add_argument("--baseline-epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--target-flops", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--scope", default="local")
    ap.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--methods", nargs="+", default=list_methods())
    ap.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                    help="also train the unpruned baseline for the post-pruning epochs")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = parse(argv)
        result = run_table5(config(args, dataset(args)))
        command = command_line("tools/table5_synthetic.py", argv)
        write_report(args.doc, "Table 5 on synthetic data", intro(args), table5_markdown(result), command)
        print(f"wrote {args.doc}", file=sys.stderr)
        return 0

    return run_tool(go, argv)


if __name__ == "__main__":
    sys.exit(main())
