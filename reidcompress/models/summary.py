"""Model complexity: parameters and FLOPs counted by ``torch.utils.flop_counter``, stage widths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reidcompress.models.backbones import stage_modules
from reidcompress.models.reid import ReIDNet

__all__ = ["Complexity", "complexity", "count_flops", "count_params", "stage_widths", "conv_widths", "model_summary"]

FLOPS_CONVENTION = "torch.utils.flop_counter: 2 FLOPs per multiply-add, batch 1, conv+linear only"


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, int], batch: int = 1) -> int:
    """FLOPs of one eval forward pass at ``input_size`` (2 FLOPs per multiply-add, as
    ``torch.utils.flop_counter`` counts; convolutions and matmuls only)."""
    was_training = model.training
    model.eval()
    ref = next(model.parameters())
    x = torch.zeros(batch, 3, *input_size, device=ref.device, dtype=ref.dtype)
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: ReIDNet, include_classifier: bool = False) -> int:
    """Parameters of the inference network (the ID classifier is training-only, so excluded)."""
    skip = set() if include_classifier or model.classifier is None else {id(p) for p in model.classifier.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


@dataclass(frozen=True)
class Complexity:
    """The cost of one image through the inference network.

    Attributes:
        flops: FLOPs of one eval forward pass at ``input_size`` (``FLOPS_CONVENTION``).
        params: parameters without the training-only ID classifier.
        input_size: (height, width) the FLOPs were counted at.
    """

    flops: int
    params: int
    input_size: tuple[int, int]

    @property
    def macs(self) -> int:
        return self.flops // 2


def complexity(model: ReIDNet, input_size: tuple[int, int] | None = None) -> Complexity:
    """FLOPs and parameters of ``model`` at ``input_size`` (default: the size it was trained at)."""
    h, w = input_size or model.config.input_size
    return Complexity(count_flops(model, (h, w)), count_params(model), (h, w))


def stage_widths(model: ReIDNet) -> dict[str, list[int]]:
    """Per stage, the output width of every conv (block-internal widths show where pruning cut)."""
    return {
        name: [m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)]
        for name, stage in stage_modules(model.backbone).items()
    }


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every Conv2d, by module name: the per-layer record of a pruned model."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def model_summary(model: ReIDNet) -> dict[str, Any]:
    """What ``reidcompress info`` shows, as plain JSON-able values."""
    cfg = model.config
    cost = complexity(model)
    return {
        "arch": cfg.arch,
        "params": cost.params,
        "params_with_classifier": count_params(model, include_classifier=True),
        "flops": cost.flops,
        "macs": cost.macs,
        "flops_convention": FLOPS_CONVENTION,
        "input_size": list(cfg.input_size),
        "embedding_dim": model.embedding_dim,
        "num_classes": cfg.num_classes,
        "last_stride": cfg.last_stride,
        "pooling": cfg.pooling,
        "neck": cfg.neck,
        "preprocessing": {"mean": list(cfg.mean), "std": list(cfg.std), "input": "RGB float in [0, 1], NCHW"},
        "stage_widths": stage_widths(model),
        "pruning": model.pruning,
    }
