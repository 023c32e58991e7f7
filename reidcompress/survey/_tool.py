"""What the survey tools (``tools/reproduce_table5.py``, ``tools/scenarios.py``, ``tools/table5_synthetic.py``)
share on their command lines: training and pruning options, error handling, the report they write."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reidcompress._io import atomic_write_text
from reidcompress._parse import name_options, parse_assignments, parse_size
from reidcompress.errors import InputError, ReidCompressError
from reidcompress.survey.runs import Overrides

__all__ = ["add_training_options", "overrides", "pairs", "run_tool", "write_report", "publish", "command_line"]


def add_training_options(ap: argparse.ArgumentParser) -> None:
    """Options that scale a run down or change its recipe's settings (None = the recipe's)."""
    g = ap.add_argument_group("training (defaults: the recipe's)")
    g.add_argument("--input-size", type=parse_size, help="HEIGHTxWIDTH, e.g. 128x64")
    g.add_argument("--epochs", type=int, help="training epochs of the baselines / source model")
    g.add_argument("--finetune-epochs", type=int, help="post-pruning budget (and unpruned fine-tuning) epochs")
    g.add_argument("--lr", type=float, help="learning rate of training and fine-tuning")
    g.add_argument("--num-workers", type=int, help="data-loading processes")
    g.add_argument("--seed", type=int, help="seed of training, sampling and calibration")
    g.add_argument("--train-set", action="append", metavar="KEY=VALUE", help="any TrainConfig field, training")
    g.add_argument("--finetune-set", action="append", metavar="KEY=VALUE", help="any TrainConfig field, fine-tuning")
    g = ap.add_argument_group("pruning (defaults: the recipe's)")
    g.add_argument("--target-flops", type=float, help="fraction of the FLOPs to keep")
    g.add_argument("--round-to", type=int, help="kept channel counts are multiples of this")
    g.add_argument("--scope", choices=("local", "global"))
    g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")


def overrides(args: argparse.Namespace) -> Overrides:
    """What the parsed options change in the recipes."""
    common = {k: getattr(args, k) for k in ("lr", "num_workers", "seed") if getattr(args, k) is not None}
    prune = {k: getattr(args, k) for k in ("target_flops", "round_to", "scope", "residual")}
    return Overrides(
        input_size=args.input_size,
        train_epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        train={**common, **parse_assignments(args.train_set, "--train-set")},
        finetune={**common, **parse_assignments(args.finetune_set, "--finetune-set")},
        prune={k: v for k, v in prune.items() if v is not None},
    )


def pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``["resnet50=a.pt"]`` -> ``{"resnet50": "a.pt"}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(f"{what} takes ARCH=VALUE, got {item!r}")
        out[key] = value
    return out


def command_line(script: str, argv: Sequence[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return f"PYTHONPATH=$PWD python {script} {shlex.join(args)}".rstrip()


def write_report(doc: Path, title: str, intro: Sequence[str], body: Sequence[str], command: str) -> Path:
    """The Markdown report: title, what was run, the tables, and the command that made it."""
    lines = [f"# {title}", "", *intro, "", *body, "", "Produced by:", "", "```", command, "```", ""]
    return atomic_write_text(doc, "\n".join(lines))


def publish(
    result: Mapping[str, Any],
    json_path: Path,
    doc: Path,
    title: str,
    intro: Sequence[str],
    body: Sequence[str],
    command: str,
) -> None:
    """A tool's outputs: the result as JSON, the report, and the tables on stdout."""
    atomic_write_text(json_path, json.dumps(result, indent=2, default=str) + "\n")
    write_report(doc, title, intro, body, command)
    print("\n".join(body))
    print(f"wrote {doc} and {json_path}", file=sys.stderr)


def run_tool(main: Callable[[], int], argv: Sequence[str] | None = None) -> int:
    """Bad input is one line on stderr and exit code 2, as for the ``reidcompress`` commands.

    A parameter the message names (in backticks) is written as the option the user typed for it, if
    any, in ``argv`` (default: ``sys.argv``): argparse names an option's value after its flag.
    """
    try:
        return main()
    except ReidCompressError as e:
        typed = [a.partition("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")]
        print(f"error: {name_options(str(e), {a[2:].replace('-', '_'): a for a in typed})}", file=sys.stderr)
        return 2
