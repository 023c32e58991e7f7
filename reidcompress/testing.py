"""Helpers for checking a model against an independent reference (like ``torch.testing``): the test
suite and the parity tools in ``tools/`` share them.

``per_image_train_loader`` is the training data path before images were kept in memory: a DataLoader
whose workers decode and augment each image with torchvision's transforms, seeded as torch seeds them.

A freshly built network has BatchNorm statistics of 0 and 1 and affine parameters of 1 and 0, under
which a channel coupled to the wrong one, a swapped InstanceNorm/BatchNorm half or a missed running
statistic can compute the same output. ``randomise_norms`` makes every norm layer distinct.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from reidcompress.data.datasets import ImageItem
from reidcompress.data.loader import ImageDataset
from reidcompress.data.sampler import PKSampler
from reidcompress.data.transforms import pad_for
from reidcompress.models.reid import IMAGENET_MEAN

__all__ = ["randomise_norms", "load_torchreid_model_file", "per_image_augment", "per_image_train_loader"]

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


def per_image_train_loader(
    items: Sequence[ImageItem],
    size: tuple[int, int],
    p: int,
    k: int,
    *,
    seed: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """P x K batches as the previous release loaded them: each image read, resized and augmented by
    torchvision's PIL transforms in a DataLoader worker (``num_workers=0``: in this process, from
    torch's global generator). Call ``loader.batch_sampler.set_epoch(e)`` before each epoch."""
    transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), per_image_augment(size)])
    sampler = PKSampler([it.pid for it in items], p, k, seed=seed, rank=rank, world_size=world_size)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))
    return DataLoader(
        ImageDataset(items, transform), batch_sampler=sampler, num_workers=num_workers, generator=generator
    )


def per_image_augment(size: tuple[int, int], erasing_p: float = 0.5) -> T.Compose:
    """The previous release's training augmentation of one resized PIL image, drawing from torch's
    global generator: flip, pad and random crop, to [0, 1], random erasing with the ImageNet mean."""
    return T.Compose(
        [
            T.RandomHorizontalFlip(),
            T.Pad(pad_for(size)),
            T.RandomCrop(size),
            T.ToTensor(),
            T.RandomErasing(p=erasing_p, value=IMAGENET_MEAN),  # torchvision's own scale and ratio, as before
        ]
    )
