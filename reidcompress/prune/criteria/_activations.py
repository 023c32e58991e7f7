"""Recording BatchNorm outputs during calibration passes (the activations data-driven criteria score)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["record_bn_outputs"]


@contextlib.contextmanager
def record_bn_outputs(model: nn.Module) -> Iterator[dict[nn.Module, torch.Tensor]]:
    """Yield a dict that each forward pass fills with ``{bn: output}`` for every BatchNorm2d.

    The model is put in eval mode for the duration: calibration must not move BN running statistics,
    and it scores the network as it will run. The previous mode is restored on exit.
    """
    outputs: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        outputs[module] = output

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    model.eval()
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
