"""Helpers for checking a model against an independent reference (like ``torch.testing``): the test
suite and the parity tools in ``tools/`` share them.

A freshly built network has BatchNorm statistics of 0 and 1 and affine parameters of 1 and 0, under
which a channel coupled to the wrong one, a swapped InstanceNorm/BatchNorm half or a missed running
statistic can compute the same output. ``randomise_norms`` makes every norm layer distinct.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import torch
from torch import nn

__all__ = ["randomise_norms", "load_torchreid_model_file"]

M = TypeVar("M", bound=nn.Module)


@torch.no_grad()
def randomise_norms(model: M) -> M:
    """``model`` in eval mode, with random running statistics (BatchNorm) and affine parameters
    (BatchNorm, InstanceNorm), drawn from torch's global generator."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]  # set together with running_mean
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d)) and m.affine:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def load_torchreid_model_file(src: Path, stem: str) -> ModuleType:
    """torchreid's own ``reid/models/STEM.py`` from an unpacked sdist under ``src``, imported on its own
    (the file needs only torch; the package's ``__init__`` would need its compiled extensions)."""
    path = next(Path(src).rglob(f"reid/models/{stem}.py"), None)
    if path is None:
        raise FileNotFoundError(f"no reid/models/{stem}.py under {src}: not an unpacked torchreid source tree")
    spec = importlib.util.spec_from_file_location(f"torchreid_{stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
