"""Datasets and data loaders over :class:`ImageItem` lists."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from reidcompress.data.datasets import ImageItem
from reidcompress.data.sampler import PKSampler
from reidcompress.data.transforms import build_transforms
from reidcompress.errors import DatasetError

__all__ = ["ImageDataset", "load_image", "build_train_loader", "build_eval_loader"]


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as PIL RGB; a missing or unreadable file raises DatasetError."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None


class ImageDataset(Dataset[tuple[torch.Tensor, int, int, int]]):
    """Items -> ``(image, pid, camid, index)``, the image transformed by ``transform``."""

    def __init__(self, items: Sequence[ImageItem], transform: Callable[[Image.Image], torch.Tensor]):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        it = self.items[index]
        return self.transform(load_image(it.path)), it.pid, it.camid, index


def build_train_loader(
    items: Sequence[ImageItem],
    input_size: tuple[int, int],
    p: int,
    k: int,
    *,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """P x K batches of augmented training images; call ``loader.batch_sampler.set_epoch(e)`` each epoch.

    Augmentations draw from torch's global generator in the main process (seed it for repeatable runs);
    with workers, each worker's seed derives from ``seed``, ``rank`` and the number of epochs iterated.
    """
    sampler = PKSampler([it.pid for it in items], p, k, seed=seed, rank=rank, world_size=world_size)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))
    return DataLoader(
        ImageDataset(items, build_transforms(input_size, train=True)),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def build_eval_loader(
    items: Sequence[ImageItem], input_size: tuple[int, int], batch_size: int = 64, num_workers: int = 0
) -> DataLoader:
    """Resized images in item order, for feature extraction."""
    return DataLoader(
        ImageDataset(items, build_transforms(input_size, train=False)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )
