"""Datasets and data loaders over :class:`ImageItem` lists."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from reidcompress.data.datasets import ImageItem
from reidcompress.data.sampler import PKSampler
from reidcompress.data.transforms import TrainAugment, build_decode, build_transforms
from reidcompress.errors import DatasetError

__all__ = [
    "ImageDataset",
    "TrainLoader",
    "load_image",
    "decode_images",
    "build_train_loader",
    "build_eval_loader",
    "DEFAULT_CACHE_MB",
]

# Decoded training images are kept in memory up to this size (uint8 at the input size): Market-1501
# at 128x64 takes 303 MiB, at 256x128 1.2 GiB; larger sets are decoded from disk every epoch.
DEFAULT_CACHE_MB = 1024

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


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


def decode_images(items: Sequence[ImageItem], input_size: tuple[int, int], num_workers: int = 0) -> torch.Tensor:
    """Every item's image, decoded and resized once: uint8 (N, 3, H, W)."""
    dataset = ImageDataset(items, build_decode(input_size))
    loader = DataLoader(dataset, batch_size=256, num_workers=num_workers, generator=_unused_generator())
    return torch.cat([images for images, *_ in loader])


def _unused_generator() -> torch.Generator:
    # A DataLoader draws its workers' base seed from this (or from torch's global generator, which would
    # then depend on the loading mode); decoding draws no random number.
    return torch.Generator().manual_seed(0)


class TrainLoader:
    """P x K batches ``(images, pids, camids, indices)`` of augmented training images.

    Images come decoded either from memory (:func:`decode_images`, done once) or from disk through a
    ``DataLoader`` with ``num_workers`` processes; both give the same batches. The augmentation runs on
    whole batches in this process (:meth:`epoch_streams`): an epoch's batches depend on ``(seed, rank,
    world_size, epoch, num_workers)`` alone, so a resumed run replays them without saved generator state.
    Call ``loader.batch_sampler.set_epoch(e)`` before each epoch.
    """

    def __init__(
        self,
        items: Sequence[ImageItem],
        sampler: PKSampler,
        augment: TrainAugment,
        *,
        images: torch.Tensor | None = None,
        num_workers: int = 0,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.items = list(items)
        self.batch_sampler = sampler
        self.augment = augment
        self.images = images
        self.num_workers = num_workers
        self.seed, self.rank = seed, rank
        self._pids = torch.tensor([it.pid for it in self.items])
        self._camids = torch.tensor([it.camid for it in self.items])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        streams = self.epoch_streams()
        for b, (images, pids, camids, index) in enumerate(self.decoded_batches()):
            yield self.augment(images, streams[b % len(streams)]), pids, camids, index

    def epoch_streams(self) -> list[torch.Generator]:
        """The generators this epoch's batches are augmented from: batch ``b`` draws from ``b % len``.

        They are the ones torch's DataLoader gives its workers when the per-image transforms run
        there, as they did before images were kept in memory: per epoch a base seed from a generator
        seeded by ``(seed, rank)``, worker ``w`` seeded ``base + w`` and loading every ``num_workers``-th
        batch. So a seed trains the same model as it did with per-image loading, for one worker or more.
        Without workers, per-image loading drew from torch's global generator, between whatever else
        the process drew (model initialisation, callbacks), so its augmentation depended on them and a
        resume needed the global state saved; a single stream seeded ``base`` replaces it here, which
        trains like ``num_workers=1`` and not like the previous release's ``num_workers=0``.
        """
        loader_seed = np.random.SeedSequence([self.seed, self.rank]).generate_state(1)[0]
        loader_generator = torch.Generator().manual_seed(int(loader_seed))
        # A DataLoader draws one base seed each time it is iterated, i.e. once per epoch.
        for _ in range(self.batch_sampler.epoch + 1):
            base = int(torch.empty((), dtype=torch.int64).random_(generator=loader_generator))
        return [torch.Generator().manual_seed(base + w) for w in range(max(1, self.num_workers))]

    def decoded_batches(self) -> Iterator[Batch]:
        """The epoch's batches before augmentation: uint8 images at the input size."""
        if self.images is None:
            decode = build_decode((self.augment.height, self.augment.width))
            dataset = ImageDataset(self.items, decode)
            yield from DataLoader(
                dataset, batch_sampler=self.batch_sampler, num_workers=self.num_workers, generator=_unused_generator()
            )
            return
        for batch in self.batch_sampler:
            index = torch.tensor(batch)
            yield self.images[index], self._pids[index], self._camids[index], index


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
    cache_mb: float = DEFAULT_CACHE_MB,
) -> TrainLoader:
    """P x K batches of augmented training images, decoded once into memory when they fit ``cache_mb``.

    ``num_workers`` processes decode the images (once, or every epoch when they are not kept in memory).
    """
    items = list(items)
    sampler = PKSampler([it.pid for it in items], p, k, seed=seed, rank=rank, world_size=world_size)
    size = (int(input_size[0]), int(input_size[1]))
    fits = len(items) * 3 * size[0] * size[1] <= cache_mb * 2**20
    images = decode_images(items, size, num_workers) if fits else None
    return TrainLoader(items, sampler, TrainAugment(size), images=images, num_workers=num_workers, seed=seed, rank=rank)


def build_eval_loader(
    items: Sequence[ImageItem], input_size: tuple[int, int], batch_size: int = 64, num_workers: int = 0
) -> DataLoader:
    """Resized images in item order, for feature extraction."""
    return DataLoader(
        ImageDataset(items, build_transforms(input_size)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )
