"""ResNet trunks: torchvision's modules, so torchvision/torchreid/fast-reid weights map by name.

``tiny`` (one BasicBlock per stage, a quarter of ResNet18's channels) is the test architecture and
``small`` (half the channels) the CPU demo's.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from reidcompress.errors import ArchitectureError
from reidcompress.models._surgery import narrow_widths

__all__ = [
    "STAGES",
    "ResNetTrunk",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "tiny",
    "small",
    "set_last_stride",
    "configure_resnet",
]

STAGES = ("layer1", "layer2", "layer3", "layer4")


class ResNetTrunk(ResNet):
    """A torchvision ResNet without its ImageNet head: ``forward`` returns layer4's feature map."""

    stages: ClassVar[tuple[str, ...]] = ("conv1", *STAGES)

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int]) -> None:
        super().__init__(block, layers)
        self.avgpool = nn.Identity()
        self.fc = nn.Identity()

    @property
    def num_features(self) -> int:
        last = self.layer4[-1]
        return int((last.bn3 if isinstance(last, Bottleneck) else last.bn2).num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def set_last_stride(net: ResNet, stride: int) -> None:
    block = net.layer4[0]
    # torchvision puts the stride on conv2 in Bottleneck (ResNet v1.5, as torchreid and fast-reid)
    # and on conv1 in BasicBlock.
    strided = block.conv2 if isinstance(block, Bottleneck) else block.conv1
    strided.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def configure_resnet(net: ResNetTrunk, last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    """Set the last stride, and fast-reid's stem when ``maxpool_ceil``.

    fast-reid's stem is ``MaxPool2d(3, 2, ceil_mode=True)`` without padding, torchvision's has
    ``padding=1``: same output size, different windows, so imported fast-reid weights need it.
    """
    if last_stride not in (1, 2):
        raise ArchitectureError(f"last_stride must be 1 or 2, got {last_stride}")
    set_last_stride(net, last_stride)
    if maxpool_ceil:
        net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    return net


def resnet18(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    return configure_resnet(ResNetTrunk(BasicBlock, [2, 2, 2, 2]), last_stride, maxpool_ceil)


def resnet34(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    return configure_resnet(ResNetTrunk(BasicBlock, [3, 4, 6, 3]), last_stride, maxpool_ceil)


def resnet50(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    return configure_resnet(ResNetTrunk(Bottleneck, [3, 4, 6, 3]), last_stride, maxpool_ceil)


def resnet101(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    return configure_resnet(ResNetTrunk(Bottleneck, [3, 4, 23, 3]), last_stride, maxpool_ceil)


def _narrow_resnet(divisor: int) -> ResNetTrunk:
    """One BasicBlock per stage at 1/divisor of ResNet18's channels."""
    return narrow_widths(ResNetTrunk(BasicBlock, [1, 1, 1, 1]), divisor)


def tiny(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    """Test architecture: 16/32/64/128 channels, 128-d embedding, 0.31M parameters."""
    return configure_resnet(_narrow_resnet(4), last_stride, maxpool_ceil)


def small(last_stride: int, maxpool_ceil: bool) -> ResNetTrunk:
    """Demo architecture: 32/64/128/256 channels, 256-d embedding, 1.2M parameters; trains on a CPU in minutes."""
    return configure_resnet(_narrow_resnet(2), last_stride, maxpool_ceil)
