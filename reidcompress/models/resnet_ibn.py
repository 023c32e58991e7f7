"""IBN-Net ResNet50 trunks (Pan et al., "Two at Once: Enhancing Learning and Generalization
Capacities via IBN-Net", ECCV 2018), with torchreid's ``resnet_ibn_a.py``/``resnet_ibn_b.py``
parameter names (fast-reid's ``WITH_IBN`` ResNet uses the same names for IBN-a).

- IBN-a: in layer1-3 every Bottleneck's ``bn1`` is an ``IBN``: InstanceNorm on the first ``half``
  channels, BatchNorm on the rest.
- IBN-b: the stem's ``bn1`` is an InstanceNorm, and the last block of layer1 and layer2 applies an
  InstanceNorm (``IN``) to the residual sum before its ReLU.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from reidcompress.models._surgery import narrow_widths
from reidcompress.models.resnet import ResNetTrunk, configure_resnet

__all__ = ["IBN", "BottleneckIN", "resnet50_ibn_a", "resnet50_ibn_b", "resnet_ibn_a_tiny", "resnet_ibn_b_tiny"]


class IBN(nn.Module):
    """Instance-Batch Normalisation: ``cat(IN(x[:, :half]), BN(x[:, half:]))``.

    ``half`` is read from the InstanceNorm's width, so a pruned (or rebuilt-from-shapes) IBN splits
    where its two norms meet without a separate record of the split point.
    """

    def __init__(self, planes: int) -> None:
        super().__init__()
        half = int(planes / 2)
        self.IN = nn.InstanceNorm2d(half, affine=True)
        self.BN = nn.BatchNorm2d(planes - half)

    # torchreid's and fast-reid's IBN name the split point ``half`` (an int attribute shadowing
    # ``nn.Module.half()``, as there); the parent model's ``.half()`` is unaffected.
    @property
    def half(self) -> int:  # type: ignore[override]
        return int(self.IN.num_features)

    @property
    def num_features(self) -> int:
        return self.half + int(self.BN.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.half, int(self.BN.num_features)], 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), 1)


class BottleneckIN(Bottleneck):
    """IBN-b's Bottleneck: an InstanceNorm on the residual sum, before the final ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        self.IN = nn.InstanceNorm2d(planes * self.expansion, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.IN(out + identity))


def _ibn_a(net: ResNetTrunk) -> ResNetTrunk:
    for stage in (net.layer1, net.layer2, net.layer3):
        for block in stage:
            block.bn1 = IBN(block.conv1.out_channels)
    return net


def _ibn_b(net: ResNetTrunk) -> ResNetTrunk:
    net.bn1 = nn.InstanceNorm2d(net.conv1.out_channels, affine=True)  # type: ignore[assignment]
    for stage in (net.layer1, net.layer2):
        last = stage[-1]
        stride = last.conv2.stride[0]
        stage[-1] = BottleneckIN(last.conv1.in_channels, last.conv1.out_channels, stride, last.downsample)
    return net


def resnet50_ibn_a(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    return configure_resnet(_ibn_a(ResNetTrunk(Bottleneck, [3, 4, 6, 3])), last_stride, maxpool_ceil)


def resnet50_ibn_b(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    return configure_resnet(_ibn_b(ResNetTrunk(Bottleneck, [3, 4, 6, 3])), last_stride, maxpool_ceil)


def _tiny_bottleneck_resnet() -> ResNetTrunk:
    """One Bottleneck per stage at 1/8 of ResNet50's widths (8/16/32/64 planes, 256-d output)."""
    return narrow_widths(ResNetTrunk(Bottleneck, [1, 1, 1, 1]), 8)


def resnet_ibn_a_tiny(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    """Test architecture with IBN-a's structure."""
    return configure_resnet(_ibn_a(_tiny_bottleneck_resnet()), last_stride, maxpool_ceil)


def resnet_ibn_b_tiny(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    """Test architecture with IBN-b's structure."""
    return configure_resnet(_ibn_b(_tiny_bottleneck_resnet()), last_stride, maxpool_ceil)
