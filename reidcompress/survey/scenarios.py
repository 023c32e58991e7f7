"""The survey's pruning scenarios across domains (its Figure 3), one resumable run.

A model trained on a source domain is to run, pruned, on a target domain. The scenarios differ in
where and when pruning happens:

- (a) prune the source model (calibrated, or trained while pruning, on the source data), then
  fine-tune it on the target;
- (b) fine-tune the source model on the target, then prune it there and fine-tune again;
- (c) prune while fine-tuning on the target: training-time methods (PSFP, Auto-Balanced) started from
  the source model, their pruning epochs being the target fine-tuning.

Every pruned model gets the same post-pruning budget (``epochs``) on the target. Reference rows, all
unpruned: the source model on the target, the source model fine-tuned on the target (the counterpart of
(a) and (c)), and that model fine-tuned for ``epochs`` more (the counterpart of (b)).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from reidcompress.data.datasets import load_dataset
from reidcompress.errors import MethodError
from reidcompress.models.checkpoint import load_model
from reidcompress.prune import get_method
from reidcompress.survey.runs import (
    Overrides,
    Run,
    Setup,
    fmt,
    pretrained_checkpoint,
    pruned_row,
    split_budget,
    trained_model,
)

__all__ = ["ScenarioConfig", "SCENARIOS", "run_scenarios", "scenarios_markdown"]

SCENARIOS = {
    "a": "prune the source model, then fine-tune on the target",
    "b": "fine-tune on the target, then prune and fine-tune",
    "c": "prune while fine-tuning on the target",
}


@dataclass(frozen=True)
class ScenarioConfig:
    """What to run.

    Attributes:
        work: the folder of checkpoints, logs and ``stages.json``.
        source, target: (root, ``load_dataset`` layout) of each domain.
        arch, recipe, pretrained: the network, its recipe (default: its own, else resnet50's) and
            ImageNet weights for its trunk (random init without).
        target_epochs: fine-tuning the unpruned model on the target, also scenario (b)'s first step
            (default: the post-pruning budget).
        methods: scenarios (a) and (b); training_methods: scenario (c) (each must prune while training).
        changes: what the run changes in the recipe: ``train_epochs`` are the source training's,
            ``finetune_epochs`` the post-pruning budget on the target (default: the recipe's).
        device: auto | cpu | cuda[:N].
    """

    work: Path
    source: tuple[Path, str]
    target: tuple[Path, str]
    arch: str = "resnet50"
    recipe: str | os.PathLike[str] | None = None
    pretrained: Path | None = None
    target_epochs: int | None = None
    methods: tuple[str, ...] = ("hao_li", "molchanov", "entropy")
    training_methods: tuple[str, ...] = ("psfp", "auto_balanced")
    changes: Overrides = field(default_factory=Overrides)
    device: str = "auto"

    def __post_init__(self) -> None:
        for m in self.methods:
            get_method(m)
        for m in self.training_methods:
            if not get_method(m).needs_training:
                raise MethodError(f"scenario (c) prunes while training; {m} prunes once (list it in `methods`)")


def run_scenarios(cfg: ScenarioConfig, console: Console | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every scenario; returns the rows and what they were made with (JSON-able).

    Returns:
        ``rows``: ``{"scenario" (reference | a | b | c), "method", "label", "params", "flops",
        "flops_ratio", "target_epochs", "before", "after"}`` with metrics on the target; ``source``:
        the source model on its own domain; ``setup``, ``init``, ``epochs``.
    """
    setup = Setup.make(cfg.arch, cfg.recipe, cfg.changes)
    setup.check_methods((*cfg.methods, *cfg.training_methods))
    src, tgt = load_dataset(*cfg.source), load_dataset(*cfg.target)
    init = pretrained_checkpoint(cfg.arch, cfg.pretrained, Path(cfg.work))
    run = Run(cfg.work, cfg.device, console or Console(stderr=True), progress)
    epochs = int(setup.finetune["epochs"])
    target_epochs = cfg.target_epochs or epochs
    source = trained_model(
        run,
        "source model",
        {"setup": setup.model_settings(), "init": init.to_dict()},
        lambda: setup.build(src.num_train_pids, init.checkpoint),
        src,
        setup.train_config(src),
        run.work / "source.pt",
    )
    on_target = run.stage(
        "source model on the target",
        {"model": source["key"], "data": tgt.root},
        [],
        lambda: {"metrics": run.metrics(load_model(source["checkpoint"]), tgt)},
    )
    tuned = trained_model(
        run,
        "fine-tune on the target",
        {"base": source["key"]},
        functools.partial(load_model, source["checkpoint"]),
        tgt,
        setup.finetune_config(target_epochs, tgt),
        run.work / "finetuned.pt",
        new_ids=True,
    )
    finetune_on = (tgt, functools.partial(setup.finetune_config, dataset=tgt))
    # Scenario (b)'s unpruned counterpart: as many target epochs, the same two fine-tuning runs.
    longer = trained_model(
        run,
        f"fine-tune on the target, {epochs} more epochs",
        {"base": tuned["key"]},
        functools.partial(load_model, tuned["checkpoint"]),
        tgt,
        finetune_on[1](epochs),
        run.work / "finetuned-longer.pt",
    )
    rows = [
        _reference("source model, not trained on the target", source, 0, on_target["metrics"]),
        _reference("source model fine-tuned on the target, unpruned", tuned, target_epochs, tuned["metrics"]),
        _reference(f"the same, {epochs} more epochs, unpruned", longer, target_epochs + epochs, longer["metrics"]),
    ]
    on_source, on_tgt = (src, setup.prune_data(src, run.device)), (tgt, setup.prune_data(tgt, run.device))
    options = setup.prune_options()
    plans = [("a", m, source, on_source, (split_budget(m, epochs)[0], epochs), 0) for m in cfg.methods]
    plans += [("b", m, tuned, on_tgt, split_budget(m, epochs), target_epochs) for m in cfg.methods]
    plans += [("c", m, source, on_tgt, split_budget(m, epochs), 0) for m in cfg.training_methods]
    for scenario, method, base, prune_on, budget, before_target in plans:
        row = pruned_row(
            run, f"({scenario}) {method}", base, method, options, prune_on, finetune_on, budget, run.work / scenario
        )
        # Scenario (a) trains its own epochs (if any) on the source: only the fine-tuning is on the target.
        on_target_epochs = before_target + (row["tail_epochs"] if scenario == "a" else sum(budget))
        rows.append({"scenario": scenario, "method": method, "label": method, **row, "target_epochs": on_target_epochs})
    return {
        "rows": rows,
        "source": source["metrics"],
        "datasets": {"source": src.root, "target": tgt.root},
        "setup": setup.to_dict(),
        "init": init.describe(),
        "epochs": epochs,
        "target_epochs": target_epochs,
    }


def _reference(label: str, stage: Mapping[str, Any], target_epochs: int, metrics: Mapping[str, float]) -> dict:
    return {
        "scenario": "reference",
        "method": "-",
        "label": label,
        "params": stage["params"],
        "flops": stage["flops"],
        "flops_ratio": 1.0,
        "target_epochs": target_epochs,
        "before": None,
        "after": dict(metrics),
        "checkpoint": stage["checkpoint"],
    }


def _pair(m: Mapping[str, float] | None) -> str:
    return "-" if m is None else f"{m['mAP']:.2f} / {m['rank1']:.2f}"  # the survey's order, as in TABLE5.md


def scenarios_markdown(result: Mapping[str, Any]) -> list[str]:
    """The results table (target mAP / rank-1) and the scenarios' legend."""
    lines = [
        "| scenario | method | params (M) | GFLOPs | FLOPs ratio | target epochs | target mAP / R-1 before FT "
        "| target mAP / R-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        scenario = r["scenario"] if r["scenario"] == "reference" else f"({r['scenario']})"
        name = r["label"] if r["scenario"] == "reference" else r["method"]
        lines.append(
            f"| {scenario} | {name} | {r['params'] / 1e6:.3f} | {r['flops'] / 1e9:.3f} | {fmt(r['flops_ratio'])} | "
            f"{r['target_epochs']} | {_pair(r['before'])} | {_pair(r['after'])} |"
        )
    lines += ["", *[f"- ({k}) {v}" for k, v in SCENARIOS.items()]]
    return lines
