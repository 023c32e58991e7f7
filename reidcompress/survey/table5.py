"""The survey's Table 5 matrix: ResNet baselines on each benchmark, and each pruning method on the
pruned architecture (ResNet50) at about half its FLOPs, fine-tuned in the same domain.

For every dataset given: each architecture is trained from its recipe (``models/ARCH.json``); the
pruned architecture's baseline is pruned by each method to the recipe's FLOPs target and trained for
the recipe's fine-tuning epochs afterwards (:func:`reidcompress.survey.runs.split_budget`). Every model
and row is a resumable stage of the work folder.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from reidcompress.data.datasets import ReIDDataset, load_dataset
from reidcompress.errors import InputError
from reidcompress.models.checkpoint import load_model
from reidcompress.prune import get_method
from reidcompress.survey.reference import BENCHMARKS, SURVEY_METHODS, TABLE5, survey_row
from reidcompress.survey.runs import (
    Initialisation,
    Overrides,
    Run,
    Setup,
    fmt,
    pretrained_checkpoint,
    pruned_row,
    split_budget,
    trained_model,
)

__all__ = ["Table5Config", "run_table5", "table5_markdown"]


@dataclass(frozen=True)
class Table5Config:
    """What to run. Defaults are the survey's matrix at the recipes' full size.

    Attributes:
        work: the folder of checkpoints, logs and ``stages.json`` (reused by the next run).
        datasets: column key -> (root, ``load_dataset`` layout); keys of ``BENCHMARKS`` get the survey's
            numbers beside ours.
        archs: baseline rows. ``prune_arch``'s baseline is trained even when not listed.
        prune_arch: the architecture the methods prune.
        methods: registered pruning methods, one row each.
        recipes: architecture -> recipe name or file (default: its own, else resnet50's).
        pretrained: architecture -> ImageNet weights (reidcompress or torchvision checkpoint).
        changes: what the run changes in the recipes (input size, epochs... to scale it down).
        control: add the pruned architecture's baseline trained for the fine-tuning epochs, unpruned.
        device: auto | cpu | cuda[:N].
    """

    work: Path
    datasets: Mapping[str, tuple[Path, str]]
    archs: tuple[str, ...] = ("resnet50", "resnet34", "resnet18")
    prune_arch: str = "resnet50"
    methods: tuple[str, ...] = SURVEY_METHODS
    recipes: Mapping[str, str | os.PathLike[str]] = field(default_factory=dict)
    pretrained: Mapping[str, Path] = field(default_factory=dict)
    changes: Overrides = field(default_factory=Overrides)
    control: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.datasets:
            raise InputError("`datasets` is empty: give at least one dataset root")
        for m in self.methods:
            get_method(m)
        unknown = sorted(set(self.pretrained) - set(self.all_archs))
        if unknown:
            raise InputError(
                f"`pretrained` names {unknown}, which this run does not train ({', '.join(self.all_archs)})"
            )

    @property
    def all_archs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.archs, self.prune_arch)))

    def setup(self, arch: str) -> Setup:
        return Setup.make(arch, self.recipes.get(arch), self.changes)


def run_table5(cfg: Table5Config, console: Console | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the matrix; returns its rows and what they were made with (JSON-able).

    Returns:
        ``rows``: one per network, ``{"name", "kind" (baseline | control | pruned), "label", "results":
        {dataset key: {params, flops, flops_ratio, before, after, ...}}}``; ``datasets``, ``setups``,
        ``init`` (per architecture) and ``finetune_epochs``.
    """
    setups = {a: cfg.setup(a) for a in cfg.all_archs}
    setups[cfg.prune_arch].check_methods(cfg.methods)
    # Every dataset is read before the first training: a wrong folder fails now, not hours later.
    data = {k: load_dataset(root, layout) for k, (root, layout) in cfg.datasets.items()}
    inits = {a: pretrained_checkpoint(a, cfg.pretrained.get(a), Path(cfg.work)) for a in cfg.all_archs}
    run = Run(cfg.work, cfg.device, console or Console(stderr=True), progress)
    epochs = int(setups[cfg.prune_arch].finetune["epochs"])
    rows: dict[str, dict[str, Any]] = {}
    for key, ds in data.items():
        for name, kind, label, result in _dataset_rows(run, cfg, key, ds, setups, inits, epochs):
            rows.setdefault(name, {"name": name, "kind": kind, "label": label, "results": {}})["results"][key] = result
    return {
        "rows": [rows[n] for n in (*cfg.all_archs, "control", *cfg.methods) if n in rows],
        "datasets": {k: {"root": str(r), "layout": lay} for k, (r, lay) in cfg.datasets.items()},
        "prune_arch": cfg.prune_arch,
        "setups": {a: s.to_dict() for a, s in setups.items()},
        "init": {a: i.describe() for a, i in inits.items()},
        "finetune_epochs": epochs,
    }


def _dataset_rows(
    run: Run,
    cfg: Table5Config,
    key: str,
    ds: ReIDDataset,
    setups: Mapping[str, Setup],
    inits: Mapping[str, Initialisation],
    epochs: int,
) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """One dataset's column: (name, kind, label, result) per network, as each finishes."""
    bases = {a: _baseline(run, key, setups[a], inits[a], ds) for a in cfg.all_archs}
    ref, setup = bases[cfg.prune_arch], setups[cfg.prune_arch]
    for a in cfg.all_archs:
        yield a, "baseline", a, _row(bases[a], ref["flops"])
    finetune = functools.partial(setup.finetune_config, dataset=ds)
    if cfg.control:
        control = trained_model(
            run,
            f"{key}: {cfg.prune_arch} + {epochs} epochs",
            {"base": ref["key"]},
            functools.partial(load_model, ref["checkpoint"]),
            ds,
            finetune(epochs),
            run.work / key / f"{cfg.prune_arch}-control.pt",
        )
        yield "control", "control", f"{cfg.prune_arch} + {epochs} epochs, unpruned", _row(control, ref["flops"])
    prune_on = (ds, setup.prune_data(ds, run.device))
    for method in cfg.methods:
        budget = split_budget(method, epochs)
        row = pruned_row(
            run,
            f"{key}: {method}",
            ref,
            method,
            setup.prune_options(),
            prune_on,
            (ds, finetune),
            budget,
            run.work / key,
        )
        yield method, "pruned", f"{method} ({cfg.prune_arch})", row


def _baseline(run: Run, key: str, setup: Setup, init: Initialisation, ds: ReIDDataset) -> dict[str, Any]:
    return trained_model(
        run,
        f"{key}: {setup.arch} baseline",
        {"setup": setup.model_settings(), "init": init.to_dict()},
        lambda: setup.build(ds.num_train_pids, init.checkpoint),
        ds,
        setup.train_config(ds),
        run.work / key / f"{setup.arch}.pt",
    )


def _row(stage: Mapping[str, Any], flops0: int) -> dict[str, Any]:
    return {
        "params": stage["params"],
        "flops": stage["flops"],
        "flops_ratio": stage["flops"] / flops0,
        "before": None,
        "after": stage["metrics"],
        "checkpoint": stage["checkpoint"],
    }


# ------------------------------------------------------------------------------------------------ Markdown


def _span(values: Sequence[float], spec: str) -> str:
    """One value, or the range when the datasets' models differ (data-driven pruning, say)."""
    lo, hi = format(min(values), spec), format(max(values), spec)
    return lo if lo == hi else f"{lo}-{hi}"


def _cell(ours: Mapping[str, float] | None, survey: tuple[float, float] | None) -> str:
    text = "-" if ours is None else f"{ours['mAP']:.2f} / {ours['rank1']:.2f}"
    return text if survey is None else f"{text} ({survey[0]:.2f} / {survey[1]:.2f})"


def table5_markdown(result: Mapping[str, Any]) -> list[str]:
    """Table 5's shape, each of our cells followed by the survey's in parentheses, and a pruning table."""
    keys = list(result["datasets"])
    titles = [BENCHMARKS[k].title if k in BENCHMARKS else k for k in keys]
    ref50 = TABLE5["resnet50"].gflops
    lines = [
        "| network | params (M) | GFLOPs | FLOPs ratio | " + " | ".join(f"{t} mAP / R-1" for t in titles) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for row in result["rows"]:
        res = row["results"]
        sv = survey_row(row["name"], result["prune_arch"])
        params = _span([r["params"] / 1e6 for r in res.values()], ".2f")
        gflops = _span([r["flops"] / 1e9 for r in res.values()], ".3f")
        ratio = _span([r["flops_ratio"] for r in res.values()], ".2f")
        if sv is not None:
            params, gflops = f"{params} ({sv.params_m:.2f})", f"{gflops} ({sv.gflops:.2f})"
            ratio = f"{ratio} ({sv.gflops / ref50:.2f})"
        cells = [_cell(res[k]["after"] if k in res else None, sv.results.get(k) if sv else None) for k in keys]
        lines.append(f"| {row['label']} | {params} | {gflops} | {ratio} | " + " | ".join(cells) + " |")
    pruned = [r for r in result["rows"] if r["kind"] == "pruned"]
    if pruned:
        lines += [
            "",
            "Pruned networks (FLOPs ratio to the unpruned baseline; channels removed = mean fraction per "
            "pruned group; own epochs = the method's training-time pruning epochs, FT = fine-tuning epochs "
            "after pruning or removal):",
            "",
            "| network | dataset | FLOPs ratio | channels removed | own epochs | FT epochs "
            "| mAP / R-1 before FT | mAP / R-1 after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in pruned:
            for k, title in zip(keys, titles, strict=True):
                r = row["results"].get(k)
                if r is None:
                    continue
                lines.append(
                    f"| {row['label']} | {title} | {r['flops_ratio']:.3f} | {fmt(r['channels_removed'])} | "
                    f"{r['own_epochs']} | {r['tail_epochs']} | {_cell(r['before'], None)} | {_cell(r['after'], None)} |"
                )
    return lines
