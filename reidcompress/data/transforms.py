"""Image transforms: the evaluation resize and the strong-baseline training augmentation.

Training images are decoded and resized once (:func:`build_decode`, uint8 CHW) and augmented a batch
at a time on tensors (:class:`TrainAugment`): each image still gets its own flip, crop and erasing,
drawn from a generator the caller seeds, so the augmentation no longer depends on how many loading
processes there are, and decoded images can stay in memory between epochs.
"""

from __future__ import annotations

import math
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
ERASE_ATTEMPTS = 10


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
    fits is used. The result equals torchvision's per-image ``hflip``, ``pad``, ``crop``,
    ``to_tensor`` and ``erase`` with the same parameters.

    Random erasing fills with the ImageNet mean in [0, 1] units, which the model's own normalisation
    maps to zero, as erasing with 0 after normalisation does in torchreid and fast-reid.
    """

    def __init__(self, input_size: tuple[int, int], erasing_p: float = 0.5) -> None:
        self.height, self.width = (int(s) for s in input_size)
        self.pad = pad_for(input_size)
        self.erasing_p = erasing_p
        self.fill = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample(len(images), generator))

    def sample(self, n: int, generator: torch.Generator) -> AugmentParams:
        """Draw the parameters of ``n`` images; the generator advances by the same amount every call."""

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, dtype=torch.float64)

        flip = uniform(n) < 0.5
        span = 2 * self.pad + 1
        top = (uniform(n) * span).long()
        left = (uniform(n) * span).long()
        return AugmentParams(flip, top, left, self._erase_boxes(uniform(n) < self.erasing_p, uniform))

    def _erase_boxes(self, erase: torch.Tensor, uniform: Callable[..., torch.Tensor]) -> torch.Tensor:
        n, (hh, ww) = len(erase), (self.height, self.width)
        area = hh * ww * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * uniform(n, ERASE_ATTEMPTS))
        lo, hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
        aspect = torch.exp(lo + (hi - lo) * uniform(n, ERASE_ATTEMPTS))
        h = torch.round(torch.sqrt(area * aspect)).long()
        w = torch.round(torch.sqrt(area / aspect)).long()
        fits = (h < hh) & (w < ww)
        first = fits.long().argmax(1, keepdim=True)  # the first attempt that fits, as RandomErasing takes it
        h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
        use = erase & fits.any(1)
        i = (uniform(n) * (hh - h + 1)).long()
        j = (uniform(n) * (ww - w + 1)).long()
        return torch.stack([i, j, h, w], 1) * use.unsqueeze(1)

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
