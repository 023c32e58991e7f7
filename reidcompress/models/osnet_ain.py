"""OSNet-AIN trunks (Zhou et al., "Learning Generalisable Omni-Scale Representations for Person
Re-Identification", TPAMI 2021), module for module as torchreid 0.2.5's ``reid/models/osnet_ain.py``.

Differences from OSNet: the streams are a ``ModuleList`` of ``LightConvStream``s, the stage
transitions are separate ``pool2``/``pool3`` modules, the stem is an InstanceNorm ConvLayer, and
``OSBlockINin`` blocks normalise the residual branch with an InstanceNorm (their ``conv3`` has no BN).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.models.osnet import (
    ChannelGate,
    Conv1x1,
    Conv1x1Linear,
    ConvLayer,
    LightConv3x3,
    _init_params,
    _transition,
    check_no_stride_options,
)

__all__ = ["LightConvStream", "OSBlockAIN", "OSNetAIN", "osnet_ain_x1_0", "osnet_ain_tiny"]


class LightConvStream(nn.Module):
    """``depth`` LightConv3x3 in a row."""

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        convs = [LightConv3x3(in_channels, out_channels)]
        convs += [LightConv3x3(out_channels, out_channels) for _ in range(depth - 1)]
        self.layers = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OSBlockAIN(nn.Module):
    """osnet_ain.py's ``OSBlock``: T streams (``conv2``), one shared gate; IN inside the residual
    branch when ``IN`` (``OSBlockINin``)."""

    def __init__(self, in_channels: int, out_channels: int, IN: bool = False, reduction: int = 4, T: int = 4) -> None:
        super().__init__()
        mid = out_channels // reduction
        self.conv1 = Conv1x1(in_channels, mid)
        self.conv2 = nn.ModuleList(LightConvStream(mid, mid, t) for t in range(1, T + 1))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, out_channels, bn=not IN)
        self.downsample = Conv1x1Linear(in_channels, out_channels) if in_channels != out_channels else None
        self.IN = nn.InstanceNorm2d(out_channels, affine=True) if IN else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        gated = [self.gate(stream(x1)) for stream in self.conv2]
        x2 = gated[0]
        for g in gated[1:]:
            x2 = x2 + g
        x3 = self.conv3(x2)
        if self.IN is not None:
            x3 = self.IN(x3)
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(x3 + identity)


class OSNetAIN(nn.Module):
    """torchreid's OSNet-AIN up to ``conv5``.

    Args:
        blocks: per stage, whether each block is torchreid's ``OSBlockINin`` (True) or a plain ``OSBlock``.
        channels: stem width then the three stages' widths.
    """

    stages: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "pool2", "conv3", "pool3", "conv4", "conv5")

    def __init__(self, blocks: list[list[bool]], channels: list[int]) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3, IN=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_layer(blocks[0], channels[0], channels[1])
        self.pool2 = _transition(channels[1])
        self.conv3 = self._make_layer(blocks[1], channels[1], channels[2])
        self.pool3 = _transition(channels[2])
        self.conv4 = self._make_layer(blocks[2], channels[2], channels[3])
        self.conv5 = Conv1x1(channels[3], channels[3])
        _init_params(self)

    @staticmethod
    def _make_layer(kinds: list[bool], in_c: int, out_c: int) -> nn.Sequential:
        return nn.Sequential(*(OSBlockAIN(in_c if i == 0 else out_c, out_c, IN=k) for i, k in enumerate(kinds)))

    @property
    def num_features(self) -> int:
        return int(self.conv5.bn.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.maxpool(self.conv1(x))))
        return self.conv5(self.conv4(self.pool3(self.conv3(x))))


def osnet_ain_x1_0(last_stride: int, maxpool_ceil: bool) -> OSNetAIN:
    check_no_stride_options("osnet_ain_x1_0", last_stride, maxpool_ceil)
    # torchreid: [[OSBlockINin, OSBlockINin], [OSBlock, OSBlockINin], [OSBlockINin, OSBlock]]
    return OSNetAIN([[True, True], [False, True], [True, False]], [64, 256, 384, 512])


def osnet_ain_tiny(last_stride: int, maxpool_ceil: bool) -> OSNetAIN:
    """Test architecture: osnet_x0_25's widths, one block per stage, both block kinds."""
    check_no_stride_options("osnet_ain_tiny", last_stride, maxpool_ceil)
    return OSNetAIN([[True], [False], [True]], [16, 64, 96, 128])
