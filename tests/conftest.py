from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidcompress.models.reid import ReIDConfig, ReIDNet


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def make_tiny_model() -> ReIDNet:
    """A tiny ReID net at 64x32 with non-trivial BN statistics, from torch's global generator."""
    model = ReIDNet(ReIDConfig(arch="tiny", num_classes=5, input_size=(64, 32)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def tiny_model() -> ReIDNet:
    """:func:`make_tiny_model` after ``torch.manual_seed(0)``."""
    return make_tiny_model()


def synth_market(out: Path, style: str = "source") -> Path:
    """A small synthetic Market-1501-style dataset at 64x32 (12 ids x 3 cameras)."""
    from reidcompress.data.synth import synthesize

    synthesize(out, ids=12, cams=3, images_per_id=6, seed=0, style=style, size=(64, 32))
    return out


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`synth_market` in the ``source`` style."""
    return synth_market(tmp_path_factory.mktemp("synth") / "market")


@pytest.fixture(scope="session")
def synth_target_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``synth_root`` in the ``target`` style (another camera network and population)."""
    return synth_market(tmp_path_factory.mktemp("synth_target") / "market", style="target")


def train_tiny(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """(checkpoint, dataset root): `tiny` trained briefly (20 epochs of 6 batches) on 15 synthetic ids at 64x32.

    Its accuracy is whatever the run gives (rank-1 5-27 over seeds 0-4, and it moves with the thread count),
    so no test may assert one on it. A plain function, not only a fixture, so that
    ``tools/check_test_margins.py`` reruns exactly this recipe with other seeds and shows the margins of the
    tests that assert something else on it (INT8 parity).
    """
    from reidcompress.data.datasets import load_dataset
    from reidcompress.data.synth import synthesize
    from reidcompress.models.checkpoint import save_model
    from reidcompress.train.config import TrainConfig
    from reidcompress.train.engine import train

    root = out / "market"
    synthesize(root, ids=30, cams=3, images_per_id=8, seed=0, size=(64, 32))
    ds = load_dataset(root)
    torch.manual_seed(seed)
    model = ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32), num_classes=ds.num_train_pids))
    config = TrainConfig.for_epochs(20, lr=1e-3, p=5, k=4, num_workers=0, eval_every=0, schedule="cosine", seed=seed)
    train(model, ds.train, config, device="cpu", progress=False)
    return save_model(out / "tiny-trained.pt", model.eval()), root


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, dataset root) of :func:`train_tiny` with seed 0. Tests that assert a threshold on it show
    in ``tools/check_test_margins.py`` that the threshold holds for seeds 0-4."""
    return train_tiny(tmp_path_factory.mktemp("trained"))


# Identity colours: the corners of the cube {0.2, 0.8}^3, at least 0.6 apart in every pair, against a per-image
# jitter of at most 0.05 per channel: the nearest gallery image of any query is, by construction, its own identity's.
SEPARABLE_COLOURS = [(r, g, b) for r in (0.2, 0.8) for g in (0.2, 0.8) for b in (0.2, 0.8)]
SEPARABLE_JITTER = 0.05


@pytest.fixture(scope="session")
def separable_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Market-1501-layout dataset where each identity is one flat colour (``SEPARABLE_COLOURS``), seen by two
    cameras: two gallery images and one query per camera, each with its own small colour jitter."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("separable") / "market"
    rng = np.random.default_rng(0)
    frame = 100

    def write(split: str, pid: int, cam: int, colour: tuple[float, float, float]) -> None:
        nonlocal frame
        frame += 1
        rgb = np.clip(np.array(colour) + rng.uniform(-SEPARABLE_JITTER, SEPARABLE_JITTER, 3), 0, 1)
        pixels = np.broadcast_to(np.round(rgb * 255).astype(np.uint8), (64, 32, 3))
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels)).save(root / split / f"{pid:04d}_c{cam}s1_{frame:06d}_01.png")

    for pid, colour in enumerate(SEPARABLE_COLOURS, start=1):
        for cam in (1, 2):
            write("query", pid, cam, colour)
            for _ in range(2):
                write("bounding_box_test", pid, cam, colour)
    for pid, grey in enumerate((0.35, 0.5, 0.65), start=len(SEPARABLE_COLOURS) + 1):
        for cam in (1, 2):
            write("bounding_box_train", pid, cam, (grey, grey, grey))
    return root


@pytest.fixture(scope="session")
def colour_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of a `tiny` ReIDNet whose embedding is, by construction, an affine map of the image's mean colour.

    The stem convolution passes the normalised RGB channels through (its centre tap), the stem BN shifts them
    by +3 so that every ReLU on the way is the identity (normalised colours lie in [-2.2, 2.7]), every
    residual branch ends in a BN with zero weight and bias (torchvision's zero-init residual: the block is
    its shortcut), and every downsample shortcut is the identity on those three channels. All BNs are
    otherwise identities, so dims 0-2 of the embedding are ``(colour - mean) / std + 3`` (times a BN epsilon
    factor) and the other 125 are zero: on ``separable_root`` the reference's rank-1 is 100 by construction.
    """
    model = ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32)))
    b = model.backbone
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.weight.fill_(1.0)
                m.bias.zero_()
        centre = b.conv1.kernel_size[0] // 2
        b.conv1.weight.zero_()
        b.conv1.weight[range(3), range(3), centre, centre] = 1.0
        b.bn1.bias[:3] = 3.0
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            block = getattr(b, stage)[0]
            block.bn2.weight.zero_()
            if block.downsample is not None:
                block.downsample[0].weight.zero_()
                block.downsample[0].weight[range(3), range(3), 0, 0] = 1.0
    from reidcompress.models.checkpoint import save_model

    return save_model(tmp_path_factory.mktemp("colour_reader") / "colour-reader.pt", model.eval())
