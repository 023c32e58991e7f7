"""Image transforms: PIL RGB -> float tensor CHW in [0, 1] (the model normalises itself)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from reidcompress.models.reid import IMAGENET_MEAN

__all__ = ["build_transforms", "pad_for"]


def pad_for(input_size: tuple[int, int]) -> int:
    """Padding before the random crop: the strong baseline's 10 px at 256x128, scaled with the height."""
    return max(1, round(10 * input_size[0] / 256))


def build_transforms(
    input_size: tuple[int, int], train: bool, *, erasing_p: float = 0.5
) -> Callable[[Image.Image], torch.Tensor]:
    """The strong-baseline augmentation (Luo et al., 2019) or the plain evaluation resize.

    Args:
        input_size: (height, width) of the network input.
        train: Resize, horizontal flip, pad + random crop, random erasing; otherwise resize only.
        erasing_p: Probability of random erasing (train only).

    Random erasing fills with the ImageNet mean in [0, 1] units, which the model's own normalisation
    maps to zero, as erasing with 0 after normalisation does in torchreid and fast-reid.
    """
    size = tuple(input_size)
    if not train:
        return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.ToTensor()])
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(),
            T.Pad(pad_for(input_size)),
            T.RandomCrop(size),
            T.ToTensor(),
            T.RandomErasing(p=erasing_p, value=IMAGENET_MEAN),
        ]
    )
