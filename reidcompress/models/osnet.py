"""OSNet trunks (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019),
module for module as torchreid 0.2.5's ``reid/models/osnet.py``, so torchreid (and boxmot) state
dicts load by name.

The ImageNet/ReID head (``global_avgpool``, the 512-d ``fc`` block, ``classifier``) lives in
``ReIDNet``; this module ends at ``conv5``. torchreid's eval forward returns the ``fc`` output.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.errors import ArchitectureError

__all__ = [
    "ConvLayer",
    "Conv1x1",
    "Conv1x1Linear",
    "LightConv3x3",
    "ChannelGate",
    "OSBlock",
    "OSNet",
    "osnet_x1_0",
    "osnet_x0_75",
    "osnet_x0_5",
    "osnet_x0_25",
    "osnet_ibn_x1_0",
    "osnet_tiny",
    "osnet_ibn_tiny",
    "check_no_stride_options",
]


class ConvLayer(nn.Module):
    """conv + BatchNorm (InstanceNorm when ``IN``) + ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, IN: bool = False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn: nn.Module = nn.InstanceNorm2d(out_channels, affine=True) if IN else nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1x1 conv + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 conv + BatchNorm (none when ``bn=False``, OSNet-AIN's IN blocks), no ReLU."""

    def __init__(self, in_channels: int, out_channels: int, bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x


class LightConv3x3(nn.Module):
    """1x1 conv (linear) + depthwise 3x3 conv + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, groups=out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``; one gate is shared by an OSBlock's four streams,
    so its width is the streams' common width."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_channels, in_channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(in_channels // reduction, in_channels, 1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * g


class OSBlock(nn.Module):
    """Omni-scale block: 1x1 conv, four streams of 1-4 LightConv3x3 gated and summed, 1x1 conv, residual."""

    def __init__(self, in_channels: int, out_channels: int, IN: bool = False, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = out_channels // bottleneck_reduction
        self.conv1 = Conv1x1(in_channels, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, out_channels)
        self.downsample = Conv1x1Linear(in_channels, out_channels) if in_channels != out_channels else None
        self.IN = nn.InstanceNorm2d(out_channels, affine=True) if IN else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.gate(self.conv2a(x1)) + self.gate(self.conv2b(x1)) + self.gate(self.conv2c(x1))
        x2 = x2 + self.gate(self.conv2d(x1))
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.conv3(x2) + identity
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(out)


def _transition(channels: int) -> nn.Sequential:
    return nn.Sequential(Conv1x1(channels, channels), nn.AvgPool2d(2, stride=2))


class OSNet(nn.Module):
    """torchreid's OSNet up to ``conv5``: ``forward`` returns its feature map.

    Args:
        layers: OSBlocks per stage (conv2, conv3, conv4).
        channels: stem width then the three stages' widths.
        IN: osnet_ibn: InstanceNorm in the stem and in conv2's blocks.
    """

    stages: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "conv3", "conv4", "conv5")

    def __init__(self, layers: list[int], channels: list[int], IN: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3, IN=IN)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_layer(layers[0], channels[0], channels[1], reduce_spatial_size=True, IN=IN)
        self.conv3 = self._make_layer(layers[1], channels[1], channels[2], reduce_spatial_size=True)
        self.conv4 = self._make_layer(layers[2], channels[2], channels[3], reduce_spatial_size=False)
        self.conv5 = Conv1x1(channels[3], channels[3])
        _init_params(self)

    @staticmethod
    def _make_layer(n: int, in_c: int, out_c: int, reduce_spatial_size: bool, IN: bool = False) -> nn.Sequential:
        blocks: list[nn.Module] = [OSBlock(in_c, out_c, IN=IN)]
        blocks += [OSBlock(out_c, out_c, IN=IN) for _ in range(1, n)]
        if reduce_spatial_size:
            blocks.append(_transition(out_c))
        return nn.Sequential(*blocks)

    @property
    def num_features(self) -> int:
        return int(self.conv5.bn.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))


def _init_params(net: nn.Module) -> None:
    """torchreid's initialisation (``OSNet._init_params``)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_no_stride_options(name: str, last_stride: int, maxpool_ceil: bool) -> None:
    """OSNet's last stage never downsamples (last stride 1) and its stem is torchreid's."""
    if last_stride != 1:
        raise ArchitectureError(f"{name} has no strided last stage: last_stride must be 1, got {last_stride}")
    if maxpool_ceil:
        raise ArchitectureError(f"{name}: maxpool_ceil (fast-reid's ResNet stem) applies to ResNets only")


def _osnet(name: str, channels: list[int], last_stride: int, maxpool_ceil: bool, IN: bool = False) -> OSNet:
    check_no_stride_options(name, last_stride, maxpool_ceil)
    return OSNet([2, 2, 2], channels, IN=IN)


def osnet_x1_0(last_stride: int, maxpool_ceil: bool) -> OSNet:
    return _osnet("osnet_x1_0", [64, 256, 384, 512], last_stride, maxpool_ceil)


def osnet_x0_75(last_stride: int, maxpool_ceil: bool) -> OSNet:
    return _osnet("osnet_x0_75", [48, 192, 288, 384], last_stride, maxpool_ceil)


def osnet_x0_5(last_stride: int, maxpool_ceil: bool) -> OSNet:
    return _osnet("osnet_x0_5", [32, 128, 192, 256], last_stride, maxpool_ceil)


def osnet_x0_25(last_stride: int, maxpool_ceil: bool) -> OSNet:
    return _osnet("osnet_x0_25", [16, 64, 96, 128], last_stride, maxpool_ceil)


def osnet_ibn_x1_0(last_stride: int, maxpool_ceil: bool) -> OSNet:
    return _osnet("osnet_ibn_x1_0", [64, 256, 384, 512], last_stride, maxpool_ceil, IN=True)


def osnet_tiny(last_stride: int, maxpool_ceil: bool) -> OSNet:
    """Test architecture: osnet_x0_25's widths, one OSBlock per stage."""
    check_no_stride_options("osnet_tiny", last_stride, maxpool_ceil)
    return OSNet([1, 1, 1], [16, 64, 96, 128])


def osnet_ibn_tiny(last_stride: int, maxpool_ceil: bool) -> OSNet:
    """Test architecture with osnet_ibn_x1_0's InstanceNorms."""
    check_no_stride_options("osnet_ibn_tiny", last_stride, maxpool_ceil)
    return OSNet([1, 1, 1], [16, 64, 96, 128], IN=True)
