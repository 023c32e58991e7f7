"""Optimiser and learning-rate schedule of a run (per-epoch: warm-up, then step or cosine)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from reidcompress.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Frozen parameters (the BNNeck bias) stay out: weight decay would otherwise still move them.
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` at each 0-based epoch."""

    def factor(epoch: int) -> float:
        w = config.warmup_epochs
        if epoch < w:
            return config.warmup_factor + (1.0 - config.warmup_factor) * epoch / w
        if config.schedule == "cosine":
            span = max(config.epochs - w, 1)
            cos = 0.5 * (1.0 + math.cos(math.pi * (epoch - w) / span))
            return config.min_lr_factor + (1.0 - config.min_lr_factor) * cos
        return config.gamma ** sum(epoch >= m for m in config.milestones)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    # A plain closure: LambdaLR stores nothing for it, so the scheduler state stays weights_only-loadable.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
