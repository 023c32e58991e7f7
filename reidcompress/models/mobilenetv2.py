"""MobileNetV2 trunks (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018), module for module as torchreid 0.2.5's ``reid/models/mobilenetv2.py``.

torchreid's eval forward returns the average-pooled ``conv9`` output (1280-d at x1.0, 1792-d at
x1.4); its last downsampling stage is ``conv7`` (stride 2), which ``last_stride`` sets.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.errors import ArchitectureError

__all__ = ["ConvBlock", "Bottleneck", "MobileNetV2", "mobilenetv2_x1_0", "mobilenetv2_x1_4", "mobilenetv2_tiny"]

# (expansion t, width c, blocks n, stride s) of conv2..conv8, the paper's Table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBlock(nn.Module):
    """conv (no bias) + BatchNorm + ReLU6."""

    def __init__(self, in_c: int, out_c: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, k, stride=s, padding=p, bias=False, groups=g)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise 3x3, linear 1x1 projection.

    ``use_residual`` is fixed when the block is built (stride 1 and equal widths in the unpruned
    network), so a pruned block whose widths happen to become equal does not grow a shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion_factor: int, stride: int = 1) -> None:
        super().__init__()
        mid = in_channels * expansion_factor
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv1 = ConvBlock(in_channels, mid, 1)
        self.dwconv2 = ConvBlock(mid, mid, 3, stride, 1, g=mid)
        self.conv3 = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv3(self.dwconv2(self.conv1(x)))
        return x + m if self.use_residual else m


class MobileNetV2(nn.Module):
    """torchreid's MobileNetV2 up to ``conv9``.

    Args:
        width_mult: channel multiplier (torchreid: 1.0 or 1.4).
        blocks: blocks per stage, conv2..conv8 (default: the paper's).
        feature_dim: ``conv9``'s width (default: torchreid's rule, 1280 or 1280 * width_mult above 1).
    """

    stages: ClassVar[tuple[str, ...]] = tuple(f"conv{i}" for i in range(1, 10))

    def __init__(
        self, width_mult: float = 1.0, blocks: tuple[int, ...] | None = None, feature_dim: int | None = None
    ) -> None:
        super().__init__()
        in_c = int(32 * width_mult)
        self.conv1 = ConvBlock(3, in_c, 3, s=2, p=1)
        for i, (t, c, n, s) in enumerate(SETTINGS):
            n = blocks[i] if blocks is not None else n
            out_c = int(c * width_mult)
            layer = [Bottleneck(in_c if j == 0 else out_c, out_c, t, s if j == 0 else 1) for j in range(n)]
            self.add_module(f"conv{i + 2}", nn.Sequential(*layer))
            in_c = out_c
        if feature_dim is None:
            feature_dim = int(1280 * width_mult) if width_mult > 1 else 1280
        self.conv9 = ConvBlock(in_c, feature_dim, 1)
        for m in self.modules():  # torchreid's _init_params
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_features(self) -> int:
        return int(self.conv9.bn.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stages:
            x = getattr(self, name)(x)
        return x


def _configure(net: MobileNetV2, last_stride: int, maxpool_ceil: bool) -> MobileNetV2:
    if last_stride not in (1, 2):
        raise ArchitectureError(f"last_stride must be 1 or 2, got {last_stride}")
    if maxpool_ceil:
        raise ArchitectureError("maxpool_ceil (fast-reid's ResNet stem) applies to ResNets only")
    conv7: Any = net.conv7
    first = conv7[0]
    first.dwconv2.conv.stride = (last_stride, last_stride)
    return net


def mobilenetv2_x1_0(last_stride: int, maxpool_ceil: bool) -> MobileNetV2:
    return _configure(MobileNetV2(1.0), last_stride, maxpool_ceil)


def mobilenetv2_x1_4(last_stride: int, maxpool_ceil: bool) -> MobileNetV2:
    return _configure(MobileNetV2(1.4), last_stride, maxpool_ceil)


def mobilenetv2_tiny(last_stride: int, maxpool_ceil: bool) -> MobileNetV2:
    """Test architecture: a quarter of the widths, one or two blocks per stage (two where a residual
    shortcut joins them), 128-d conv9."""
    return _configure(MobileNetV2(0.25, blocks=(1, 2, 1, 2, 1, 1, 1), feature_dim=128), last_stride, maxpool_ceil)
