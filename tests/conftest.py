from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Market-1501-style dataset at 64x32 (12 ids x 3 cameras, source style)."""
    from reidcompress.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "market"
    synthesize(out, ids=12, cams=3, images_per_id=6, seed=0, style="source", size=(64, 32))
    return out


@pytest.fixture(scope="session")
def synth_target_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``synth_root`` in the ``target`` style (another camera network and population)."""
    from reidcompress.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth_target") / "market"
    synthesize(out, ids=12, cams=3, images_per_id=6, seed=0, style="target", size=(64, 32))
    return out
