"""What the survey's experiments share: recipe-driven training settings, resumable stages in a work folder,
and pruning a checkpoint to a FLOPs target followed by a post-pruning training budget.

Every model and every metric row is a stage of :class:`~reidcompress.demo.stages.StageRunner` (the
demo's): it is persisted as it finishes and reused on the next run while its settings, and those of the
stages it builds on, are unchanged. An interrupted training or fine-tuning run continues from its last
epoch; training-time pruning (psfp, auto_balanced) runs inside one pruning call and starts again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from reidcompress._io import file_sha256
from reidcompress.data.datasets import ReIDDataset
from reidcompress.demo.stages import StageRunner, settings_key
from reidcompress.errors import InputError
from reidcompress.evaluation.features import evaluate_embedder
from reidcompress.models.checkpoint import FORMAT, load_model, load_raw, save_model
from reidcompress.models.importers import import_checkpoint
from reidcompress.models.recipes import Recipe, list_recipes, load_recipe
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import complexity
from reidcompress.prune import PruneData, PruneOptions, get_method, prune_model
from reidcompress.prune.strategies.adaptive import split_controlled_budget
from reidcompress.prune.training import training_options
from reidcompress.runtime.torch_backend import TorchEmbedder, resolve_device
from reidcompress.train.config import TrainConfig
from reidcompress.train.engine import RunPaths, TrainResult, train
from reidcompress.train.finetune import finetune_checkpoint
from reidcompress.train.pretrained import build_model

__all__ = [
    "Overrides",
    "Setup",
    "Run",
    "Initialisation",
    "METRICS",
    "split_budget",
    "trained_model",
    "finetuned_model",
    "pruned_row",
    "pretrained_checkpoint",
    "fmt",
]

METRICS = ("rank1", "mAP", "mINP")


@dataclass(frozen=True)
class Overrides:
    """What a run changes in the recipes; None or empty keeps the recipe's.

    Attributes:
        input_size: (height, width).
        train_epochs, finetune_epochs: the ``train`` / ``finetune`` sections' epochs (schedules scale with them).
        train, finetune: TrainConfig fields; prune: PruneOptions fields.
    """

    input_size: tuple[int, int] | None = None
    train_epochs: int | None = None
    finetune_epochs: int | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    finetune: Mapping[str, Any] = field(default_factory=dict)
    prune: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Setup:
    """How one architecture is built, trained, fine-tuned and pruned: a recipe with the run's overrides.

    Attributes:
        arch: the architecture trained (it may differ from the recipe's, e.g. ``tiny`` with resnet50's settings).
        recipe: the recipe the settings come from (``models/ARCH.json`` by default).
        model: ``build_model`` settings (input_size, last_stride, pooling).
        train, finetune: recipe sections with the overrides applied (plain TrainConfig fields).
        prune: PruneOptions fields from the recipe's ``prune`` section with the overrides applied.
    """

    arch: str
    recipe: str
    model: Mapping[str, Any]
    train: Mapping[str, Any]
    finetune: Mapping[str, Any]
    prune: Mapping[str, Any]

    @classmethod
    def make(cls, arch: str, recipe: str | os.PathLike[str] | None = None, changes: Overrides | None = None) -> Setup:
        """The architecture's own recipe (``models/ARCH.json``), else resnet50's: the survey's main network."""
        over = changes or Overrides()
        rec: Recipe = load_recipe(recipe or (arch if arch in list_recipes() else "resnet50"))
        model: dict[str, Any] = {"input_size": (256, 128), "last_stride": 1, "pooling": "avg"}
        model.update({k: v for k, v in rec.model.items() if k != "arch"})
        model["input_size"] = tuple(int(v) for v in over.input_size or model["input_size"])
        prune = {k: v for k, v in rec.prune.items() if k != "method"}
        prune.update({k: v for k, v in over.prune.items() if v is not None})
        unknown = sorted(set(prune) - {f.name for f in dataclasses.fields(PruneOptions)})
        if unknown:
            raise InputError(f"{rec.path}: unknown prune options {unknown}")
        return cls(
            arch=arch,
            recipe=str(rec.path),
            model=model,
            # The recipe's schedules scaled to the epochs asked for, then the explicit overrides.
            train=TrainConfig.from_recipe(rec.train, over.train_epochs, **over.train).to_dict(),
            finetune=TrainConfig.from_recipe(rec.finetune, over.finetune_epochs, **over.finetune).to_dict(),
            prune=prune,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_settings(self) -> dict[str, Any]:
        """What a trained baseline depends on (fine-tuning and pruning settings do not change it)."""
        return {"arch": self.arch, "model": dict(self.model), "train": dict(self.train)}

    def build(self, num_classes: int, pretrained: Path | None) -> ReIDNet:
        spec = dict(self.model)
        return build_model(
            self.arch,
            num_classes,
            spec["input_size"],
            pretrained=pretrained,
            last_stride=spec["last_stride"],
            pooling=spec["pooling"],
        )

    def train_config(self, dataset: ReIDDataset) -> TrainConfig:
        return _fit_ids(TrainConfig.from_dict(self.train), dataset)

    def finetune_config(self, epochs: int, dataset: ReIDDataset) -> TrainConfig:
        """The fine-tuning section for ``epochs`` epochs, its schedule scaled as a recipe's is."""
        return _fit_ids(TrainConfig.from_recipe(self.finetune, epochs), dataset)

    def prune_options(self, **changes: Any) -> PruneOptions:
        return PruneOptions(**{**self.prune, **changes})

    def check_methods(self, methods: Sequence[str]) -> None:
        """Raise MethodError/InputError now for a method or option that would fail after hours of training."""
        for m in methods:
            spec = get_method(m)
            self.prune_options(epochs=int(spec.needs_training)).check(spec, has_data=True)

    def prune_data(self, dataset: ReIDDataset, device: str) -> PruneData:
        """``dataset``'s training split for calibration and training-time methods, with the fine-tuning
        optimiser settings (the strong baseline's schedule proportions, scaled to each method's epochs)."""
        c = _fit_ids(TrainConfig.from_dict(self.finetune), dataset)
        options = training_options(c.to_dict())
        return PruneData(items=tuple(dataset.train), p=c.p, k=c.k, seed=c.seed, device=device, train_options=options)


def _fit_ids(config: TrainConfig, dataset: ReIDDataset) -> TrainConfig:
    # P identities per batch cannot exceed the identities there are (small and synthetic sets).
    return config.replace(p=min(config.p, dataset.num_train_pids))


@dataclass(frozen=True)
class Initialisation:
    """Where a network's trunk starts: ImageNet weights (a reidcompress checkpoint) or random init."""

    arch: str
    checkpoint: Path | None = None
    source: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"{self.arch}: random init (no ImageNet weights given)"
        return f"{self.arch}: ImageNet trunk from {self.source}"

    def to_dict(self) -> dict[str, Any]:
        """What a model trained from it depends on: the weights' content, not where they lie."""
        return {"arch": self.arch, "sha256": self.sha256}


def pretrained_checkpoint(arch: str, path: str | os.PathLike[str] | None, work: Path) -> Initialisation:
    """``path`` as a reidcompress checkpoint: used as it is, or imported from torchvision weights into ``work``."""
    if path is None:
        return Initialisation(arch)
    raw = load_raw(path)
    sha = file_sha256(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return Initialisation(arch, Path(path), str(path), sha)
    out = work / "pretrained" / f"{arch}-imagenet-{sha[:12]}.pt"
    if not out.exists():
        import_checkpoint(path, "torchvision", arch, out)
    return Initialisation(arch, out, f"{path} (torchvision weights, imported to {out})", sha)


@dataclass
class Run:
    """A work folder of resumable stages and the device they train on."""

    work: Path
    device: str = "auto"
    console: Console = field(default_factory=lambda: Console(stderr=True))
    progress: bool = True

    def __post_init__(self) -> None:
        self.work = Path(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = str(resolve_device(self.device))
        self.stages = StageRunner(self.work, self.console)

    def stage(
        self, name: str, settings: Mapping[str, Any], outputs: Sequence[Path], fn: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run ``fn`` unless it finished before with these settings and its outputs exist; its result,
        with ``key`` (the settings' hash, for the stages that build on it)."""
        key = settings_key(settings)
        return {**self.stages.run(name, key, outputs, fn), "key": key}

    def metrics(self, model: ReIDNet, dataset: ReIDDataset) -> dict[str, float]:
        res = evaluate_embedder(TorchEmbedder(model.eval(), device=self.device), dataset, progress=False)
        return {k: float(res[k]) for k in METRICS}

    def fit(
        self,
        model: ReIDNet,
        dataset: ReIDDataset,
        config: TrainConfig,
        out: Path,
        *,
        new_ids: bool = False,
    ) -> tuple[ReIDNet, dict[str, float]]:
        """Train ``model`` on ``dataset`` into ``out``; returns it and its query/gallery metrics.

        Continues an interrupted run of the same stage; ``new_ids`` gives it a fresh ID classifier
        (another domain's identities, even when there are as many).
        """
        resume = self._resume(out)
        n = dataset.num_train_pids
        if new_ids or model.classifier is None or model.classifier.out_features != n:
            model.reset_classifier(n)
        result = train(
            model,
            dataset.train,
            config,
            eval_data=dataset if config.eval_every > 0 else None,
            out=out,
            resume=resume,
            device=self.device,
            meta={"dataset": dataset.name, "data_root": dataset.root},
            progress=self.progress,
        )
        return self._finish(result, dataset)

    def finetune(
        self, ckpt: Path, dataset: ReIDDataset, config: TrainConfig, out: Path
    ) -> tuple[ReIDNet, dict[str, float]]:
        """``reidcompress finetune``'s training of a (pruned) checkpoint: a new ID classifier, then ``config``."""
        result = finetune_checkpoint(
            ckpt,
            dataset,
            config,
            out=out,
            evaluate=config.eval_every > 0,
            resume=self._resume(out),
            device=self.device,
            progress=self.progress,
        )
        return self._finish(result, dataset)

    def _resume(self, out: Path) -> bool:
        """Whether a run into ``out`` continues an interrupted one; else its stale state and log go."""
        paths = RunPaths.beside(out)
        resume = self.stages.resuming and paths.state.exists()
        if not resume:
            for p in (paths.state, paths.log):
                p.unlink(missing_ok=True)
        return resume

    def _finish(self, result: TrainResult, dataset: ReIDDataset) -> tuple[ReIDNet, dict[str, float]]:
        last = result.history[-1] if result.history else {}
        model = result.model.eval()
        got = {k: float(last[k]) for k in METRICS} if all(k in last for k in METRICS) else self.metrics(model, dataset)
        return model, got


def split_budget(method: str, epochs: int) -> tuple[int, int]:
    """A post-pruning budget of ``epochs`` as (the method's own training epochs, fine-tuning epochs after).

    One-shot methods prune and fine-tune all of it; soft and progressive methods prune during all of
    it; regularised methods (auto-balanced) train two thirds regularised and fine-tune the last third;
    accuracy-controlled methods (afp, play_and_prune) split it as
    :func:`~reidcompress.prune.strategies.adaptive.split_controlled_budget` does: controller trials
    (those the steps leave unused fine-tune the result on every identity), then a fine-tune.
    """
    spec = get_method(method)
    if not spec.needs_training:
        return 0, epochs
    if spec.strategy in ("adaptive", "adaptive_regularised"):
        return split_controlled_budget(epochs)
    tail = epochs // 3 if spec.strategy == "regularised" else 0
    return epochs - tail, tail


def trained_model(
    run: Run,
    name: str,
    upstream: Mapping[str, Any],
    build: Callable[[], ReIDNet],
    dataset: ReIDDataset,
    config: TrainConfig,
    out: Path,
    *,
    new_ids: bool = False,
) -> dict[str, Any]:
    """Stage ``name``: ``build()`` a model (fresh, or from an earlier stage's checkpoint), train it on ``dataset``.

    ``upstream`` holds what the built model depends on (its setup and init, or the ``key`` of the stage
    whose checkpoint it loads). Returns the stage result: checkpoint, domain (the root of the data its
    classifier knows), params, flops, metrics on ``dataset``, key.
    """

    settings = {"upstream": dict(upstream), "data": dataset.root, "config": config.to_dict(), "new_ids": new_ids}
    fit = functools.partial(run.fit, dataset=dataset, config=config, out=out, new_ids=new_ids)
    return _model_stage(run, name, settings, out, dataset, lambda: fit(build()))


def finetuned_model(
    run: Run, name: str, upstream: Mapping[str, Any], ckpt: Path, dataset: ReIDDataset, config: TrainConfig, out: Path
) -> dict[str, Any]:
    """Stage ``name``: ``reidcompress finetune`` of checkpoint ``ckpt`` on ``dataset`` (a new ID classifier
    whatever the checkpoint's, :func:`~reidcompress.train.finetune.finetune_checkpoint`). Returns what
    :func:`trained_model` returns."""
    settings = {"upstream": dict(upstream), "data": dataset.root, "config": config.to_dict(), "finetune": True}
    return _model_stage(run, name, settings, out, dataset, lambda: run.finetune(ckpt, dataset, config, out))


def _model_stage(
    run: Run,
    name: str,
    settings: Mapping[str, Any],
    out: Path,
    dataset: ReIDDataset,
    fit: Callable[[], tuple[ReIDNet, dict[str, float]]],
) -> dict[str, Any]:
    def fn() -> dict[str, Any]:
        torch.manual_seed(settings["config"]["seed"])  # the new classifier and the training: seeded alike
        model, got = fit()
        cost = complexity(model)
        sizes = {"params": cost.params, "flops": cost.flops}
        return {"checkpoint": str(out), "domain": dataset.root, **sizes, "metrics": got}

    return run.stage(name, settings, [out], fn)


def pruned_row(
    run: Run,
    name: str,
    base: Mapping[str, Any],
    method: str,
    options: PruneOptions,
    prune_on: tuple[ReIDDataset, PruneData],
    finetune_on: tuple[ReIDDataset, Callable[[int], TrainConfig]],
    budget: tuple[int, int],
    outdir: Path,
) -> dict[str, Any]:
    """Prune the checkpoint of stage result ``base`` and train it afterwards: two stages.

    ``NAME: prune`` scores on, or (training-time methods) trains ``budget[0]`` epochs on, the data of
    ``prune_on``; when ``budget[1]`` > 0, ``NAME: fine-tune`` trains that many epochs on the dataset of
    ``finetune_on`` with the config its function gives for them. Metrics are on the fine-tuning dataset.
    The fine-tuning starts with a new ID classifier, as ``reidcompress finetune`` does (issue 6's note:
    reusing the unpruned network's cost 3-4 rank-1 points on the synthetic Table 5); a training-time method gets
    a new one when it prunes on another domain than the checkpoint's.

    Returns:
        params, flops, flops_ratio, channels_removed (mean fraction per pruned group), before (metrics
        right after pruning or removal; None without fine-tuning), after, own and tail epochs, key.
    """
    own, tail = budget
    pdata, prune_items = prune_on
    fdata, ft_config = finetune_on
    raw_path, out_path = outdir / f"{method}-pruned.pt", outdir / f"{method}.pt"
    domain = pdata.root if own else base["domain"]
    prune_settings = {
        "base": base["key"],
        "method": method,
        "options": dataclasses.asdict(options),
        "own_epochs": own,
        "data": pdata.root,
        "train_options": dict(prune_items.train_options or {}),
        "eval": fdata.root,
    }

    def prune() -> dict[str, Any]:
        torch.manual_seed(prune_items.seed)
        model = load_model(base["checkpoint"])
        if own and pdata.root != base["domain"]:
            model.reset_classifier(pdata.num_train_pids)
        record = prune_model(model, method, dataclasses.replace(options, epochs=own), prune_items)
        meta = {"pruned_from": base["checkpoint"], "prune_data_root": pdata.root, "data_root": domain}
        save_model(raw_path, model.cpu(), pruning=record, meta=meta)
        rates = record["group_rates"]
        return {
            "checkpoint": str(raw_path),
            "domain": domain,
            "params": record["params_after"],
            "flops": record["flops_after"],
            "flops_ratio": record["flops_ratio"],
            "channels_removed": sum(rates.values()) / len(rates) if rates else 0.0,
            "metrics": run.metrics(model, fdata),
        }

    pruned = run.stage(f"{name}: prune", prune_settings, [raw_path], prune)
    final = pruned
    if tail:
        final = finetuned_model(
            run, f"{name}: fine-tune", {"pruned": pruned["key"]}, raw_path, fdata, ft_config(tail), out_path
        )
    row = {k: pruned[k] for k in ("params", "flops", "flops_ratio", "channels_removed")}
    return {
        **row,
        "own_epochs": own,
        "tail_epochs": tail,
        "before": pruned["metrics"] if tail else None,
        "after": final["metrics"],
        "checkpoint": final["checkpoint"],
        "key": final["key"],
    }


def fmt(v: float | None, spec: str = ".2f") -> str:
    """A table cell: ``-`` for a missing value."""
    return "-" if v is None else format(v, spec)
