"""ResNet backbones (torchvision's modules, so torchvision/torchreid/fast-reid weights map by name).

Backbones live in a plain dict registry; ``tiny`` (one BasicBlock per stage, a quarter of ResNet18's
channels) is the test architecture and ``small`` (half the channels) the CPU demo's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from reidcompress.errors import ArchitectureError
from reidcompress.models._surgery import resize_modules

__all__ = ["register_model", "list_models", "build_backbone", "STAGES"]

STAGES = ("layer1", "layer2", "layer3", "layer4")

_MODELS: dict[str, Callable[[], ResNet]] = {}


def register_model(name: str) -> Callable[[Callable[[], ResNet]], Callable[[], ResNet]]:
    def deco(fn: Callable[[], ResNet]) -> Callable[[], ResNet]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


@register_model("resnet18")
def _resnet18() -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2])


@register_model("resnet34")
def _resnet34() -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3])


@register_model("resnet50")
def _resnet50() -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3])


@register_model("resnet101")
def _resnet101() -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3])


def _narrow_resnet(divisor: int) -> ResNet:
    """One BasicBlock per stage at 1/divisor of ResNet18's channels."""
    net = ResNet(BasicBlock, [1, 1, 1, 1])
    shapes = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            in_c = m.in_channels if m.in_channels == 3 else m.in_channels // divisor
            shapes[f"{name}.weight"] = (m.out_channels // divisor, in_c, *m.kernel_size)
        elif isinstance(m, nn.BatchNorm2d):
            shapes[f"{name}.weight"] = (m.num_features // divisor,)
    resize_modules(net, shapes)
    return net


@register_model("tiny")
def _tiny() -> ResNet:
    """Test architecture: 16/32/64/128 channels, 128-d embedding, 0.31M parameters."""
    return _narrow_resnet(4)


@register_model("small")
def _small() -> ResNet:
    """Demo architecture: 32/64/128/256 channels, 256-d embedding, 1.2M parameters; trains on a CPU in minutes."""
    return _narrow_resnet(2)


def _set_last_stride(net: ResNet, stride: int) -> None:
    block = net.layer4[0]
    # torchvision puts the stride on conv2 in Bottleneck (ResNet v1.5) and on conv1 in BasicBlock.
    strided = block.conv2 if isinstance(block, Bottleneck) else block.conv1
    strided.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def build_backbone(name: str, last_stride: int = 1, maxpool_ceil: bool = False) -> ResNet:
    """A ResNet trunk without its ImageNet head (``avgpool``/``fc`` become Identity).

    Args:
        name: a registered architecture.
        last_stride: stride of the first block of layer4; 1 (the ReID strong baseline) doubles
            the final feature map.
        maxpool_ceil: fast-reid's stem (``MaxPool2d(3, 2, ceil_mode=True)``, no padding) instead of
            torchvision's (``padding=1``). Same output size, different windows, so imported
            fast-reid weights need it to reproduce fast-reid's embeddings.
    """
    if name not in _MODELS:
        raise ArchitectureError(f"unknown architecture {name!r}; choose one of {', '.join(list_models())}")
    if last_stride not in (1, 2):
        raise ArchitectureError(f"last_stride must be 1 or 2, got {last_stride}")
    net = _MODELS[name]()
    _set_last_stride(net, last_stride)
    if maxpool_ceil:
        net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    net.avgpool = nn.Identity()
    net.fc = nn.Identity()
    return net
