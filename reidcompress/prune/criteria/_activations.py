"""Recording norm-layer outputs during calibration passes (the activations data-driven criteria score)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from reidcompress.prune._pruners import is_ibn

__all__ = ["record_bn_outputs"]


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) or is_ibn(m)


@contextlib.contextmanager
def record_bn_outputs(model: nn.Module) -> Iterator[dict[nn.Module, torch.Tensor]]:
    """Yield a dict that each forward pass fills with ``{norm: output}`` for every BatchNorm2d,
    InstanceNorm2d and IBN layer.

    The model is put in eval mode for the duration: calibration must not move BN running statistics,
    and it scores the network as it will run. The previous mode is restored on exit.
    """
    outputs: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        outputs[module] = output

    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_norm(m)]
    was_training = model.training
    model.eval()
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
