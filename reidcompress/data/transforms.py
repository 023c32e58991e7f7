"""Image transforms: the evaluation resize and the strong-baseline training augmentation.

Training images are decoded and resized once (:func:`build_decode`, uint8 CHW) and augmented a batch
at a time on tensors (:class:`TrainAugment`), so decoded images can stay in memory between epochs.
Each image still gets its own flip, crop and erasing, drawn by torchvision's own parameter functions
in the order its per-image transforms draw them, from a generator the caller seeds: the same seed
gives the same images as torchvision's transforms in a seeded DataLoader worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from reidcompress.models.reid import IMAGENET_MEAN

__all__ = ["AugmentParams", "TrainAugment", "build_decode", "build_transforms", "pad_for"]

# torchvision's RandomErasing defaults (Zhong et al., "Random Erasing Data Augmentation", 2020).
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
# What RandomErasing.get_params is told to fill with: any list (we fill ourselves), as None would
# make it draw random pixels and so consume draws the per-image transform with a fill value does not.
_ANY_FILL = [0.0]


def pad_for(input_size: tuple[int, int]) -> int:
    """Padding before the random crop: the strong baseline's 10 px at 256x128, scaled with the height."""
    return max(1, round(10 * input_size[0] / 256))


def build_transforms(input_size: tuple[int, int], train: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform: PIL RGB -> float CHW in [0, 1], resized (the model normalises itself).

    Training augments batches instead: :func:`build_decode` then :class:`TrainAugment`.
    """
    if train:
        raise ValueError("training images are augmented per batch: use build_decode and TrainAugment")
    return T.Compose([T.Resize(tuple(input_size), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor()])


def build_decode(input_size: tuple[int, int]) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB -> uint8 CHW at ``input_size``: the deterministic part of the training transform, done once."""
    return T.Compose([T.Resize(tuple(input_size), interpolation=T.InterpolationMode.BILINEAR), T.PILToTensor()])


@dataclass(frozen=True)
class AugmentParams:
    """Per-image parameters of one batch (N images).

    Attributes:
        flip: (N,) bool, mirror horizontally.
        top, left: (N,) int64, the crop's corner in the padded image (0..2*pad).
        erase: (N, 4) int64 rows ``(i, j, h, w)`` of the erased rectangle; ``h == 0`` erases nothing.
    """

    flip: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    erase: torch.Tensor


class TrainAugment:
    """The strong-baseline augmentation (Luo et al., 2019) on a batch of uint8 images, one draw per image.

    Horizontal flip (p=0.5), zero padding by :func:`pad_for` and a random crop back to the input size,
    scaling to [0, 1], then random erasing (p=``erasing_p``) with torchvision's ``RandomErasing``
    parameters: up to 10 attempts at an area of 2-33% and an aspect ratio of 0.3-3.3, the first that
    fits is used. Draws and pixels both equal torchvision's per-image ``Compose([RandomHorizontalFlip(),
    Pad(pad), RandomCrop(size), ToTensor(), RandomErasing(value=mean)])`` on a resized image, run from
    the same generator state.

    Random erasing fills with the ImageNet mean in [0, 1] units, which the model's own normalisation
    maps to zero, as erasing with 0 after normalisation does in torchreid and fast-reid.
    """

    def __init__(self, input_size: tuple[int, int], erasing_p: float = 0.5) -> None:
        self.height, self.width = (int(s) for s in input_size)
        self.pad = pad_for(input_size)
        self.erasing_p = erasing_p
        self.fill = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        # torchvision's get_params read only the shape of the image they are given.
        self._shape = torch.empty(()).expand(3, self.height, self.width)
        self._padded_shape = torch.empty(()).expand(3, self.height + 2 * self.pad, self.width + 2 * self.pad)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample(len(images), generator))

    def sample(self, n: int, generator: torch.Generator) -> AugmentParams:
        """Draw the parameters of ``n`` images from ``generator``, which advances past them.

        The draws are torchvision's own (``RandomHorizontalFlip``, ``RandomCrop.get_params``,
        ``RandomErasing``), image after image, on ``generator``'s stream: a DataLoader worker seeded
        like ``generator`` and running the per-image transforms draws exactly these.
        """
        # torchvision draws from torch's global generator: lend it the caller's state, then give it back.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(generator.get_state())
            rows = [self._draw() for _ in range(n)]
            state = torch.get_rng_state()
        generator.set_state(state)
        flip, top, left, erase = zip(*rows, strict=True) if rows else ((), (), (), ())
        return AugmentParams(
            torch.tensor(flip, dtype=torch.bool),
            torch.tensor(top, dtype=torch.int64),
            torch.tensor(left, dtype=torch.int64),
            torch.tensor(erase, dtype=torch.int64).reshape(n, 4),
        )

    def _draw(self) -> tuple[bool, int, int, tuple[int, int, int, int]]:
        # The calls and their order are those of the per-image transform: flip, pad + crop, erasing.
        flip = bool(torch.rand(1) < 0.5)
        top, left, _, _ = T.RandomCrop.get_params(self._padded_shape, (self.height, self.width))
        box = (0, 0, 0, 0)
        if torch.rand(1) < self.erasing_p:
            i, j, h, w, _ = T.RandomErasing.get_params(self._shape, ERASE_SCALE, ERASE_RATIO, value=_ANY_FILL)
            if h < self.height:  # get_params returns the whole image when no attempt fits: nothing erased
                box = (i, j, h, w)
        return flip, top, left, box

    def _crop(self, padded: torch.Tensor, flip: bool, top: int, left: int) -> torch.Tensor:
        # Padding is symmetric, so cropping a flipped image at `left` is flipping the crop at the mirrored
        # offset: one copy of the crop instead of flipping the whole image first.
        if flip:
            left = 2 * self.pad - left
        crop = padded[:, top : top + self.height, left : left + self.width]
        return crop.flip(-1) if flip else crop

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """uint8 (N, 3, H, W) at the input size -> float (N, 3, H, W) in [0, 1], augmented with ``params``."""
        if images.dtype != torch.uint8 or images.shape[1:] != (3, self.height, self.width):
            want = f"uint8 (N, 3, {self.height}, {self.width})"
            raise ValueError(f"expected {want} images, got {images.dtype} {tuple(images.shape)}")
        padded = F.pad(images, (self.pad,) * 4)
        rows = zip(padded, params.flip.tolist(), params.top.tolist(), params.left.tolist(), strict=True)
        out = torch.stack([self._crop(img, flip, top, left) for img, flip, top, left in rows]).float().div_(255)
        for img, (i, j, h, w) in zip(out, params.erase.tolist(), strict=True):
            if h:
                img[:, i : i + h, j : j + w] = self.fill
        return out
