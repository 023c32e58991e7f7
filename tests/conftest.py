from __future__ import annotations

import pytest
import torch

from reidcompress.models.reid import ReIDConfig, ReIDNet


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_model() -> ReIDNet:
    """A tiny ReID net at 64x32 with non-trivial BN statistics."""
    model = ReIDNet(ReIDConfig(arch="tiny", num_classes=5, input_size=(64, 32)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()
