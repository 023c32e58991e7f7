"""Hooks that let a pruning strategy (or anything else) act inside the training loop.

Order within one run::

    on_train_start
    for each epoch:          on_epoch_start(epoch)
        for each batch:      on_batch_start(step, batch)
                             extra_loss(feats, logits, pids)   # summed into the loss
                             on_after_backward                 # true (unscaled) gradients
                             on_batch_end(step, logs)
                             on_epoch_end(epoch, logs)         # after evaluation, before the checkpoint
    on_train_end

``epoch`` is 0-based; ``step`` counts optimiser steps since the start of training (it continues
across a resume). ``trainer.model`` is the unwrapped ReIDNet (not the DDP wrapper), so editing its
weights in place edits what is trained. The engine puts the model back in train mode before every
forward pass, so a hook may trace or score it in eval mode. Callbacks run on every rank: keep their
edits deterministic. Set ``trainer.should_stop`` to end the run after the current epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from reidcompress.models.reid import ReIDNet
from reidcompress.train.losses import distillation_loss

if TYPE_CHECKING:
    from reidcompress.train.engine import Trainer

__all__ = ["Callback", "DistillationCallback", "call_all", "sum_extra_losses"]


class Callback:
    """Base class: every hook is a no-op; override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_batch_start(self, trainer: Trainer, step: int, batch: Sequence[Any]) -> None:
        """``batch`` is ``(images, pids, camids, indices)``, images and pids already on the device."""

    def extra_loss(
        self, trainer: Trainer, feats: torch.Tensor, logits: torch.Tensor | None, pids: torch.Tensor
    ) -> torch.Tensor | None:
        """A term added to the loss (a regulariser, a distillation loss), or None."""
        return None

    def on_after_backward(self, trainer: Trainer) -> None:
        """Gradients are computed and unscaled; the optimiser has not stepped (edit gradients here)."""

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        """``logs`` is the epoch's JSONL row; keys added here are logged too."""

    def on_train_end(self, trainer: Trainer) -> None:
        pass


def call_all(callbacks: Sequence[Callback], hook: str, *args: Any) -> None:
    for cb in callbacks:
        getattr(cb, hook)(*args)


def sum_extra_losses(
    callbacks: Sequence[Callback],
    trainer: Trainer,
    feats: torch.Tensor,
    logits: torch.Tensor | None,
    pids: torch.Tensor,
) -> torch.Tensor | None:
    total: torch.Tensor | None = None
    for cb in callbacks:
        term = cb.extra_loss(trainer, feats, logits, pids)
        if term is not None:
            total = term if total is None else total + term
    return total


class DistillationCallback(Callback):
    """Feature distillation from a frozen teacher (e.g. the unpruned model) during fine-tuning.

    Student and teacher are compared on the pooled feature before the BNNeck, which both compute
    from the trunk alone (the student's BNNeck in train mode would use batch statistics, the
    teacher's its running ones). The teacher is frozen and kept in eval mode.
    """

    def __init__(self, teacher: ReIDNet, weight: float, kind: str = "mse") -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.kind = kind
        self._target: torch.Tensor | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.teacher.to(trainer.device)
        if trainer.channels_last:
            self.teacher.to(memory_format=torch.channels_last)

    def on_batch_start(self, trainer: Trainer, step: int, batch: Sequence[Any]) -> None:
        with torch.no_grad(), trainer.autocast():
            self._target = self.teacher.forward_train(batch[0])[0].float()

    def extra_loss(
        self, trainer: Trainer, feats: torch.Tensor, logits: torch.Tensor | None, pids: torch.Tensor
    ) -> torch.Tensor | None:
        if self._target is None:
            return None
        loss = self.weight * distillation_loss(feats, self._target, self.kind)
        self._target = None
        return loss
