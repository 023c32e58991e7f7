"""The survey's pruning scenarios across domains, as one resumable run with a results table.

A network trained on a source domain is pruned to about half its FLOPs for a target domain: (a) prune
the source model, then fine-tune on the target; (b) fine-tune on the target, then prune and fine-tune;
(c) prune while fine-tuning on the target (training-time methods: PSFP, Auto-Balanced). Reference rows:
the unpruned source model on the target, and the source model fine-tuned on the target.

    PYTHONPATH=$PWD python tools/scenarios.py --source data/market1501 --target data/duke \\
        --target-dataset dukemtmcreid --pretrained resnet50-0676ba61.pth --work runs/scenarios-market-duke

Synthetic domains (``reidcompress data synth DIR --style source|target``) make a small run on a CPU.
Every model and row is kept in ``--work`` and reused by the next run while its settings are unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reidcompress.survey import ScenarioConfig, run_scenarios, scenarios_markdown
from reidcompress.survey._tool import add_training_options, command_line, overrides, publish, run_tool


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="source-domain dataset root")
    ap.add_argument("--target", type=Path, required=True, help="target-domain dataset root")
    ap.add_argument("--source-dataset", default="market1501", help="layout of --source (market1501, dukemtmcreid...)")
    ap.add_argument("--target-dataset", default="market1501", help="layout of --target")
    ap.add_argument("--work", type=Path, default=Path("runs/scenarios"), help="checkpoints, logs, stages.json")
    ap.add_argument("--doc", type=Path, help="the Markdown report [WORK/SCENARIOS.md]")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--recipe", help="recipe NAME or FILE [models/ARCH.json, else resnet50's]")
    ap.add_argument("--pretrained", type=Path, help="ImageNet weights for the trunk (random init without)")
    ap.add_argument("--target-epochs", type=int, help="fine-tuning the unpruned model on the target [FT epochs]")
    ap.add_argument("--methods", nargs="*", default=["hao_li", "molchanov", "entropy"], help="scenarios (a), (b)")
    ap.add_argument("--training-methods", nargs="*", default=["psfp", "auto_balanced"], help="scenario (c)")
    add_training_options(ap)
    return ap.parse_args(argv)


def config(args: argparse.Namespace) -> ScenarioConfig:
    return ScenarioConfig(
        work=args.work,
        source=(args.source, args.source_dataset),
        target=(args.target, args.target_dataset),
        arch=args.arch,
        recipe=args.recipe,
        pretrained=args.pretrained,
        target_epochs=args.target_epochs,
        methods=tuple(args.methods),
        training_methods=tuple(args.training_methods),
        device=args.device,
        changes=overrides(args),
    )


def intro(result: dict) -> list[str]:
    s, src = result["setup"], result["source"]
    h, w = s["model"]["input_size"]
    p = s["prune"]
    return [
        'The pruning scenarios of Masson et al., "Pruning Methods for Person Re-identification" (arXiv '
        "1907.02547), across domains: accuracy on the target domain's query/gallery (Market-1501 protocol).",
        "",
        f"- source `{result['datasets']['source']}`, target `{result['datasets']['target']}`",
        f"- `{s['arch']}` at {h}x{w}, recipe `{Path(s['recipe']).name}`, {s['train']['epochs']} epochs on the "
        f"source ({result['init']}); on its own domain: rank-1 {src['rank1']:.2f}, mAP {src['mAP']:.2f}",
        f"- unpruned fine-tuning on the target: {result['target_epochs']} epochs; pruning to "
        f"{p.get('target_flops')} of the FLOPs, then a budget of {result['epochs']} epochs on the target "
        "(one-shot methods fine-tune all of it, PSFP prunes during all of it, Auto-Balanced trains two thirds "
        "regularised and one third after removal); scenario (a) calibrates or trains its pruning on the source",
        "- target epochs: every epoch this model trained on the target; before FT: right after pruning "
        "(or removal), on the target; FLOPs: `torch.utils.flop_counter`, 2 per multiply-add, batch 1",
    ]


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = parse(argv)
        result = run_scenarios(config(args))
        command = command_line("tools/scenarios.py", argv)
        doc, body = args.doc or args.work / "SCENARIOS.md", scenarios_markdown(result)
        title = "Pruning scenarios across domains"
        publish(result, args.work / "scenarios.json", doc, title, intro(result), body, command)
        return 0

    return run_tool(go, argv)


if __name__ == "__main__":
    sys.exit(main())
