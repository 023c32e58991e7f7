"""The training engine: P x K batches, ID + batch-hard triplet loss, callbacks, resumable state.

One loop serves training from scratch, fine-tuning (pruned or not) and pruning strategies that act
while training (through :class:`~reidcompress.train.callbacks.Callback`). Under ``torchrun`` the
model is wrapped in DistributedDataParallel and rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from reidcompress._io import atomic_write_text, check_output_path
from reidcompress.errors import DatasetError, InputError
from reidcompress.models._surgery import resize_modules, weight_shapes
from reidcompress.models.checkpoint import save_model
from reidcompress.models.reid import ReIDNet
from reidcompress.train import _state
from reidcompress.train._malloc import keep_freed_memory
from reidcompress.train._optim import build_optimizer, build_scheduler
from reidcompress.train._progress import EpochProgress
from reidcompress.train.callbacks import Callback, DistillationCallback, call_all, sum_extra_losses
from reidcompress.train.config import TrainConfig
from reidcompress.train.distributed import (
    DistContext,
    all_gather_objects,
    barrier,
    broadcast_object,
    current_context,
    reduce_mean,
)
from reidcompress.train.losses import CrossEntropyLabelSmooth, triplet_batch_hard

__all__ = ["TrainConfig", "Trainer", "TrainResult", "RunPaths", "train"]


@dataclass(frozen=True)
class RunPaths:
    """The files of a run, beside its output model: ``m.pt`` -> ``m.state.pt``, ``m.log.jsonl``, ``m.best.pt``."""

    out: Path
    state: Path
    log: Path
    best: Path

    @classmethod
    def beside(cls, out: str | os.PathLike[str]) -> RunPaths:
        out = Path(out)
        base = out.with_suffix("")
        return cls(out, Path(f"{base}.state.pt"), Path(f"{base}.log.jsonl"), Path(f"{base}.best{out.suffix}"))


@dataclass
class TrainResult:
    model: ReIDNet
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    out: Path | None = None


class Trainer:
    """The state of a run, handed to every callback.

    Attributes:
        model: the unwrapped ReIDNet being trained (edit it in place; DDP shares its parameters).
        module: what the forward pass calls (``model`` or its DistributedDataParallel wrapper).
        optimizer, scheduler, scaler, config, device, ctx: as named.
        loader: the training data loader (P x K batches).
        epoch: the current 0-based epoch; ``step``: optimiser steps so far.
        should_stop: set it (on every rank) to end the run after the current epoch.
    """

    def __init__(self, model: ReIDNet, config: TrainConfig, ctx: DistContext, callbacks: Sequence[Callback]) -> None:
        self.model = model
        self.config = config
        self.ctx = ctx
        self.device = ctx.device
        self.callbacks = list(callbacks)
        cuda = self.device.type == "cuda"
        self.amp = config.amp and cuda
        self.channels_last = config.uses_channels_last(self.device.type)
        self.epoch = 0
        self.step = 0
        self.should_stop = False
        self.loader: Iterable[Any] | None = None
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.fingerprint: dict[str, str] | None = None
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.id_loss = CrossEntropyLabelSmooth(config.label_smoothing)
        self.module: nn.Module = model
        if ctx.distributed:
            self.module = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if cuda else None,
                find_unused_parameters=config.id_weight == 0 and model.classifier is not None,
            )

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """float16 autocast on CUDA with ``amp``; a no-op elsewhere."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def losses(self, feats: torch.Tensor, logits: torch.Tensor | None, pids: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        out: dict[str, torch.Tensor] = {}
        if c.triplet_weight > 0:
            out["triplet_loss"] = c.triplet_weight * triplet_batch_hard(feats, pids, c.margin, c.soft_margin)
        if c.id_weight > 0 and logits is not None:
            out["id_loss"] = c.id_weight * self.id_loss(logits, pids)
        extra = sum_extra_losses(self.callbacks, self, feats, logits, pids)
        if extra is not None:
            out["extra_loss"] = extra
        return out

    def train_step(self, batch: Sequence[Any]) -> dict[str, float]:
        """One optimiser step on a ``(images, pids, ...)`` batch; returns the batch's logs."""
        images = batch[0].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pids = batch[1].to(self.device, non_blocking=True)
        batch = (images, pids, *batch[2:])
        call_all(self.callbacks, "on_batch_start", self, self.step, batch)
        # Callbacks may trace or score the model (torch-pruning's graph leaves it in eval mode), and in
        # eval mode ReIDNet returns the embedding alone: train mode is restored before every forward.
        self.model.train()
        with self.autocast():
            feats, logits = self.module(images)
            parts = self.losses(feats, logits, pids)
        loss = torch.stack([v.float() for v in parts.values()]).sum()
        if not torch.isfinite(loss):
            vals = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
            raise InputError(f"the loss diverged at step {self.step} ({vals}); lower the lr or set clip_grad")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        call_all(self.callbacks, "on_after_backward", self)
        if self.config.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        logs = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}, "lr": self.lr}
        if logits is not None:
            logs["acc"] = (logits.detach().argmax(1) == pids).float().mean().item()
        call_all(self.callbacks, "on_batch_end", self, self.step, logs)
        self.step += 1
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best": self.best,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best = state.get("best")


def train(
    model: ReIDNet,
    train_items: Sequence[Any],
    config: TrainConfig,
    *,
    callbacks: Iterable[Callback] = (),
    eval_data: Any = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    teacher: ReIDNet | None = None,
    device: str | torch.device = "auto",
    meta: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` on ``train_items`` (``ImageItem`` list, pids 0..N-1) with P x K batches.

    Args:
        model: a ReIDNet whose classifier covers the training identities (``reset_classifier``).
        train_items: the training images.
        config: the hyper-parameters.
        callbacks: hooks run in order at each point of the loop (see ``callbacks``).
        eval_data: a dataset with ``query``/``gallery`` items, evaluated every ``config.eval_every``
            epochs and after the last; the best epoch by ``config.best_metric`` is kept.
        out: the final model checkpoint; the run's state, JSONL log and best model go beside it.
            None writes nothing.
        resume: continue from the state beside ``out``.
        teacher: a frozen model to distil from (weight ``config.distill_weight``).
        device: auto | cpu | cuda | cuda:N (ignored under torchrun, which gives each rank its GPU).
        meta: extra entries for the saved checkpoint's ``meta``.
        progress: show a progress bar on stderr (rank 0).

    On a CPU this keeps freed memory in the process for reuse from then on (``train._malloc``).
    """
    ctx = current_context(device)
    _check_inputs(model, train_items, config, ctx)
    if ctx.device.type == "cpu":
        keep_freed_memory()
    paths = RunPaths.beside(check_output_path(out)) if out is not None else None
    _seed_everything(config.seed + ctx.rank)
    fingerprint = _state.run_fingerprint(model.config.to_dict(), train_items) if paths is not None else None
    state = _resume_state(paths, config, model, fingerprint) if resume else None
    trainer = _make_trainer(model, config, ctx, list(callbacks), teacher, state)
    trainer.fingerprint = fingerprint
    trainer.loader = loader = _build_loader(train_items, model, config, ctx)
    if paths is not None and ctx.is_main:
        _reset_log(paths.log, trainer.history)
    call_all(trainer.callbacks, "on_train_start", trainer)
    if state is not None:
        # After every set-up step that might draw random numbers, so the next epoch replays exactly.
        _restore_rng(state, trainer)
    epochs_done = int(state["epoch"]) if state is not None else 0
    for epoch in range(epochs_done, config.epochs):
        row = _run_epoch(trainer, loader, epoch, progress and ctx.is_main)
        row.update(_maybe_evaluate(trainer, eval_data, epoch, paths))
        call_all(trainer.callbacks, "on_epoch_end", trainer, epoch, row)
        trainer.history.append(row)
        epochs_done = epoch + 1
        _end_of_epoch(trainer, paths, row, epochs_done)
        if trainer.should_stop:
            break
    call_all(trainer.callbacks, "on_train_end", trainer)
    # Channels-last is a training speed-up: what the caller gets back (and pruning, export or a
    # checkpoint sees) has the default layout again. Only the layout changes, no value.
    model.to(memory_format=torch.contiguous_format)
    if paths is not None and ctx.is_main:
        save_model(paths.out, model, meta=_meta(trainer, epochs_done, meta))
    barrier()
    return TrainResult(model, epochs_done, trainer.history, trainer.best, paths.out if paths else None)


def _make_trainer(
    model: ReIDNet,
    config: TrainConfig,
    ctx: DistContext,
    callbacks: list[Callback],
    teacher: ReIDNet | None,
    state: Mapping[str, Any] | None,
) -> Trainer:
    if teacher is not None and config.distill_weight > 0:
        _check_teacher(model, teacher)
        callbacks.insert(0, DistillationCallback(teacher, config.distill_weight, config.distill_loss))
    model.to(ctx.device)
    if config.uses_channels_last(ctx.device.type):
        model.to(memory_format=torch.channels_last)
    trainer = Trainer(model, config, ctx, callbacks)
    if state is not None:
        trainer.load_state_dict(state)
        trainer.history = [r for r in state.get("history", []) if r["epoch"] <= state["epoch"]]
    return trainer


def _check_inputs(model: ReIDNet, items: Sequence[Any], config: TrainConfig, ctx: DistContext) -> None:
    if not items:
        raise DatasetError("no training images")
    pids = {int(it.pid) for it in items}
    if len(pids) < config.p:
        raise InputError(f"the training set has {len(pids)} identities, fewer than P={config.p} per batch; lower P")
    if config.id_weight > 0:
        n = model.classifier.out_features if model.classifier is not None else 0
        if max(pids) >= n or min(pids) < 0:
            raise InputError(
                f"the model's ID classifier has {n} classes but the training pids span {min(pids)}..{max(pids)}; "
                "call reset_classifier(num_train_pids) first"
            )


def _check_teacher(model: ReIDNet, teacher: ReIDNet) -> None:
    if tuple(teacher.config.input_size) != tuple(model.config.input_size):
        raise InputError(
            f"teacher input size {teacher.config.input_size} differs from the student's {model.config.input_size}"
        )
    if teacher.embedding_dim != model.embedding_dim:
        raise InputError(
            f"teacher features have {teacher.embedding_dim} dims, the student's {model.embedding_dim}: "
            "feature distillation needs equal embedding sizes"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resume_state(
    paths: RunPaths | None, config: TrainConfig, model: ReIDNet, fingerprint: dict[str, str] | None
) -> dict[str, Any]:
    if paths is None:
        raise InputError("resuming needs the output path of the interrupted run")
    state = _state.load_state(paths.state)
    _state.check_resumable(state, config, fingerprint)
    sd = state["model"]
    # A strategy may have pruned the model during the finished epochs: rebuild at the stored widths.
    resize_modules(model, weight_shapes(sd))
    model.load_state_dict(sd, strict=True)
    model.pruning = state.get("pruning")
    return state


def _restore_rng(state: Mapping[str, Any], trainer: Trainer) -> None:
    ctx = trainer.ctx
    rngs = state["rng"]
    if len(rngs) != ctx.world_size:
        # Another number of processes cannot replay the same batches; stay deterministic at least.
        _seed_everything(state["config"]["seed"] + ctx.rank + 1000 * int(state["epoch"]))
        return
    # The loader's augmentation needs nothing restored: its streams follow from (seed, rank, epoch, num_workers).
    _state.restore_rng(rngs[ctx.rank], ctx.device)


def _build_loader(items: Sequence[Any], model: ReIDNet, config: TrainConfig, ctx: DistContext) -> Iterable[Any]:
    # Imported on use, as the evaluation below: pruning imports the engine for its weight-only methods too.
    from reidcompress.data.loader import build_train_loader

    return build_train_loader(
        list(items),
        model.config.input_size,
        config.p,
        config.k,
        num_workers=config.num_workers,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        cache_mb=config.cache_images_mb,
    )


def _run_epoch(trainer: Trainer, loader: Iterable[Any], epoch: int, show: bool) -> dict[str, Any]:
    trainer.epoch = epoch
    # The P x K sampler reshuffles per epoch from (seed, epoch): a resumed run replays the same batches.
    set_epoch = getattr(getattr(loader, "batch_sampler", None), "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    lr = trainer.lr
    call_all(trainer.callbacks, "on_epoch_start", trainer, epoch)
    sums: dict[str, float] = {}
    steps = 0
    start = time.perf_counter()
    total = len(loader) if isinstance(loader, Sized) else 0
    with EpochProgress(epoch, trainer.config.epochs, total, show) as bar:
        for batch in loader:
            logs = trainer.train_step(batch)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            bar.update(sums["loss"] / steps, logs["lr"], len(batch[0]) * trainer.ctx.world_size)
    if steps == 0:
        raise DatasetError("the P x K sampler produced no batch: too few identities with images")
    trainer.scheduler.step()
    elapsed = time.perf_counter() - start
    means = reduce_mean({k: v / steps for k, v in sums.items() if k != "lr"}, trainer.device)
    return {"epoch": epoch + 1, "lr": lr, **means, "steps": steps, "time_s": elapsed, "images_per_s": bar.images_per_s}


def _eval_due(config: TrainConfig, epoch: int) -> bool:
    last = epoch + 1 == config.epochs
    return last or (config.eval_every > 0 and (epoch + 1) % config.eval_every == 0)


def _maybe_evaluate(trainer: Trainer, eval_data: Any, epoch: int, paths: RunPaths | None) -> dict[str, Any]:
    if eval_data is None or not (_eval_due(trainer.config, epoch) or trainer.should_stop):
        return {}
    metrics: dict[str, Any] | None = None
    if trainer.ctx.is_main:
        trainer.model.eval()
        metrics = evaluate(trainer.model, eval_data, trainer.config.eval_batch_size, trainer.device)
        trainer.model.train()
    metrics = broadcast_object(metrics)
    assert metrics is not None
    key = trainer.config.best_metric
    if trainer.best is None or metrics[key] > trainer.best[key]:
        trainer.best = {"epoch": epoch + 1, **metrics}
        if paths is not None and trainer.ctx.is_main:
            save_model(paths.best, trainer.model, meta={"epoch": epoch + 1, "metrics": metrics})
    return metrics


def evaluate(model: ReIDNet, eval_data: Any, batch_size: int, device: torch.device) -> dict[str, float]:
    """Query/gallery metrics (percent) of ``model`` in eval mode: rank1, rank5, rank10, mAP, mINP."""
    from reidcompress.evaluation.features import evaluate_embedder
    from reidcompress.runtime import TorchEmbedder

    model.eval()
    embedder = TorchEmbedder(model, device=str(device))
    metrics = evaluate_embedder(embedder, eval_data, batch_size=batch_size, progress=False)
    # Scalars only (numpy ones included); curves such as the CMC stay out of the per-epoch log.
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number))}


def _end_of_epoch(trainer: Trainer, paths: RunPaths | None, row: dict[str, Any], epochs_done: int) -> None:
    if paths is None:
        return
    rngs = all_gather_objects(_state.capture_rng(trainer.device))
    if trainer.ctx.is_main:
        _state.save_state(paths.state, _training_state(trainer, epochs_done, rngs))
        with paths.log.open("a") as f:
            f.write(json.dumps(row) + "\n")
    barrier()


def _training_state(trainer: Trainer, epochs_done: int, rngs: list[dict[str, Any]]) -> dict[str, Any]:
    model = trainer.model
    return {
        "epoch": epochs_done,
        "config": trainer.config.to_dict(),
        "model_config": model.config.to_dict(),
        "fingerprint": trainer.fingerprint,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "pruning": model.pruning,
        "rng": rngs,
        "history": trainer.history,
        **trainer.state_dict(),
    }


def _reset_log(log: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(log, "".join(json.dumps(r) + "\n" for r in rows))


def _meta(trainer: Trainer, epochs_done: int, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    last = trainer.history[-1] if trainer.history else {}
    return {
        **(extra or {}),
        "train": {
            "config": trainer.config.to_dict(),
            "epochs": epochs_done,
            "world_size": trainer.ctx.world_size,
            "best": trainer.best,
            "last": last,
        },
    }
