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


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, dataset root): `tiny` trained ~2 s on 15 synthetic ids at 64x32, far above chance."""
    from reidcompress.data.datasets import load_dataset
    from reidcompress.data.synth import synthesize
    from reidcompress.models.checkpoint import save_model
    from reidcompress.train.config import TrainConfig
    from reidcompress.train.engine import train

    tmp = tmp_path_factory.mktemp("trained")
    root = tmp / "market"
    synthesize(root, ids=30, cams=3, images_per_id=8, seed=0, size=(64, 32))
    ds = load_dataset(root)
    torch.manual_seed(0)
    model = ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32), num_classes=ds.num_train_pids))
    config = TrainConfig.for_epochs(20, lr=1e-3, p=5, k=4, num_workers=0, eval_every=0, schedule="cosine")
    train(model, ds.train, config, device="cpu", progress=False)
    return save_model(tmp / "tiny-trained.pt", model.eval()), root
