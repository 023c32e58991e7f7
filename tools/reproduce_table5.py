"""Reproduce the survey's Table 5 on your copies of Market-1501, DukeMTMC-reID and CUHK03-NP.

ResNet18/34/50 baselines trained with the recipes of ``models/`` on each dataset given, and each of the
survey's pruning methods (``hao_li molchanov auto_balanced entropy psfp``; ``--extra-methods`` adds any
registered one) applied to the ResNet50 baseline at about half its FLOPs, then trained for the recipe's
fine-tuning epochs. Writes the table in the survey's shape with the survey's numbers beside ours.

    PYTHONPATH=$PWD python tools/reproduce_table5.py --market data/market1501 --duke data/duke \\
        --cuhk03 data/cuhk03 --pretrained resnet50=resnet50-0676ba61.pth --work runs/table5-full

Resumable: every baseline, pruned model and row is kept in ``--work`` and reused by the next run while
its settings are unchanged; an interrupted training continues from its last epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reidcompress.prune import list_methods
from reidcompress.survey import BENCHMARKS, SURVEY_METHODS, Table5Config, run_table5, table5_markdown
from reidcompress.survey._tool import add_training_options, command_line, overrides, pairs, publish, run_tool
from reidcompress.survey.reference import survey_row


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_argument_group("datasets (at least one; the folder holding each, as `reidcompress data info` reads it)")
    g.add_argument("--market", type=Path, help="Market-1501 root")
    g.add_argument("--duke", type=Path, help="DukeMTMC-reID root")
    g.add_argument("--cuhk03", type=Path, help="CUHK03-NP root (the folder holding cuhk03-np/)")
    g.add_argument("--cuhk03-labeled", action="store_true", help="CUHK03-NP labelled boxes instead of detected")
    ap.add_argument("--work", type=Path, default=Path("runs/table5"), help="checkpoints, logs, stages.json")
    ap.add_argument("--doc", type=Path, help="the Markdown report [WORK/TABLE5.md]")
    ap.add_argument("--archs", nargs="+", default=["resnet50", "resnet34", "resnet18"], help="baseline rows")
    ap.add_argument("--prune-arch", default="resnet50", help="the architecture the methods prune")
    ap.add_argument("--methods", nargs="*", default=list(SURVEY_METHODS), help="the survey's five by default")
    ap.add_argument("--extra-methods", nargs="+", default=[], help=f"more of: {', '.join(list_methods())}")
    ap.add_argument("--recipe", action="append", metavar="ARCH=NAME|FILE", help="default: models/ARCH.json")
    ap.add_argument(
        "--pretrained",
        action="append",
        metavar="ARCH=FILE",
        help="ImageNet weights for ARCH's trunk, torchvision .pth or `reidcompress import` output (else random init)",
    )
    ap.add_argument("--control", action="store_true", help="add the unpruned baseline trained for the FT epochs")
    add_training_options(ap)
    return ap.parse_args(argv)


def config(args: argparse.Namespace) -> Table5Config:
    roots = {"market": args.market, "duke": args.duke, "cuhk03": args.cuhk03}
    layouts = {k: b.layout for k, b in BENCHMARKS.items()}
    if args.cuhk03_labeled:
        layouts["cuhk03"] = "cuhk03np_labeled"
    return Table5Config(
        work=args.work,
        datasets={k: (root, layouts[k]) for k, root in roots.items() if root is not None},
        archs=tuple(args.archs),
        prune_arch=args.prune_arch,
        methods=tuple(dict.fromkeys([*args.methods, *args.extra_methods])),
        recipes=pairs(args.recipe, "--recipe"),
        pretrained={a: Path(p) for a, p in pairs(args.pretrained, "--pretrained").items()},
        changes=overrides(args),
        control=args.control,
        device=args.device,
    )


def intro(result: dict) -> list[str]:
    prune_arch, setups = result["prune_arch"], result["setups"]
    h, w = setups[prune_arch]["model"]["input_size"]
    with_survey = any(survey_row(arch, prune_arch) for arch in setups) or prune_arch == "resnet50"
    beside = (
        "each of our cells is followed by the survey's in parentheses"
        if with_survey
        else "the survey has no numbers for these networks (they appear beside ResNet18/34/50 rows)"
    )
    lines = [
        'Masson et al., "Pruning Methods for Person Re-identification" (arXiv 1907.02547), Table 5, '
        f"reproduced: {beside}. Our baselines follow the "
        "recipes below (the strong baseline of Luo et al. 2019, stronger than the survey's), so compare each "
        "pruned network with our own baseline, and FLOP ratios rather than absolute GFLOPs (the survey states "
        "neither its input size nor its FLOP convention).",
        "",
        f"- input {h}x{w}; FLOPs: `torch.utils.flop_counter` (2 per multiply-add), batch 1; params exclude the "
        "ID classifier; FLOPs ratio: to our unpruned "
        f"`{prune_arch}` (survey: to its ResNet50's 6.32 GFLOPS)",
    ]
    for arch, s in setups.items():
        t = s["train"]
        lines.append(
            f"- `{arch}`: recipe `{Path(s['recipe']).name}`, {t['epochs']} epochs ({t['optimizer']}, lr {t['lr']}, "
            f"{t['schedule']} schedule, P{t['p']}xK{t['k']}); {result['init'][arch]}"
        )
    p = setups[prune_arch]["prune"]
    lines.append(
        f"- pruning: `{prune_arch}` to {p.get('target_flops')} of its FLOPs (scope {p.get('scope', 'local')}, "
        f"round to {p.get('round_to', 8)}, {'with' if p.get('residual') else 'without'} the residual channels), "
        f"then {result['finetune_epochs']} epochs: fine-tuning for one-shot methods, the pruning epochs of soft "
        "and progressive ones, two thirds regularised + one third fine-tuning for `auto_balanced`"
    )
    lines += ["- datasets: " + ", ".join(f"{k} `{d['root']}` ({d['layout']})" for k, d in result["datasets"].items())]
    return lines


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = parse(argv)
        result = run_table5(config(args))
        command = command_line("tools/reproduce_table5.py", argv)
        doc, body = args.doc or args.work / "TABLE5.md", table5_markdown(result)
        publish(result, args.work / "table5.json", doc, "Table 5, reproduced", intro(result), body, command)
        return 0

    return run_tool(go, argv)


if __name__ == "__main__":
    sys.exit(main())
