"""The backbone registry: a plain dict from architecture name to how to build its trunk.

A backbone is an ``nn.Module`` whose ``forward(x)`` returns the last feature map (N, C, h, w) of
ImageNet-normalised images (timm's ``forward_features``; the ReID head lives in ``ReIDNet``), with a
``num_features`` property read from its last layer, so it follows pruning. Its parameter names are
the framework's (torchvision, torchreid, fast-reid), so their state dicts load by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from reidcompress.errors import ArchitectureError

__all__ = ["BackboneEntry", "register_backbone", "list_backbones", "get_backbone", "build_backbone"]

Builder = Callable[[int, bool], nn.Module]


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one architecture.

    Attributes:
        build: ``build(last_stride, maxpool_ceil) -> nn.Module``.
        last_strides: the strides its last downsampling stage accepts (OSNet's last stage has none).
        framework_last_stride: the one the framework that defines it uses (torchreid: 2), which an
            imported checkpoint needs to reproduce the framework's embeddings.
        fc_dim: width of the framework's own embedding layer after pooling (OSNet's ``fc``:
            Linear + BatchNorm1d + ReLU), 0 for none; the default of ``ReIDConfig.fc_dim``.
    """

    build: Builder
    last_strides: tuple[int, ...] = (1, 2)
    framework_last_stride: int = 2
    fc_dim: int = 0


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, entry: BackboneEntry) -> BackboneEntry:
    """Add an architecture; a name can be registered once."""
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    _BACKBONES[name] = entry
    return entry


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> BackboneEntry:
    if name not in _BACKBONES:
        raise ArchitectureError(f"unknown architecture {name!r}; choose one of {', '.join(list_backbones())}")
    return _BACKBONES[name]


def build_backbone(name: str, last_stride: int = 1, maxpool_ceil: bool = False) -> nn.Module:
    """The trunk of architecture ``name``; ``forward`` returns its last feature map.

    Args:
        name: a registered architecture.
        last_stride: stride of the last downsampling stage; 1 (the ReID strong baseline) doubles
            the final feature map. OSNet's last stage never downsamples, so it takes 1 only.
        maxpool_ceil: fast-reid's ResNet stem (see ``resnet.configure_resnet``).
    """
    entry = get_backbone(name)
    if last_stride not in entry.last_strides:
        raise ArchitectureError(
            f"{name}: last_stride must be one of {', '.join(map(str, entry.last_strides))}, got {last_stride}"
        )
    return entry.build(last_stride, maxpool_ceil)


def _register_builtin() -> None:
    from reidcompress.models import mobilenetv2, osnet, osnet_ain, resnet, resnet_ibn

    def osnet_entry(build: Builder, fc_dim: int = 512) -> BackboneEntry:
        return BackboneEntry(build, last_strides=(1,), framework_last_stride=1, fc_dim=fc_dim)

    builtin = {
        "resnet18": BackboneEntry(resnet.resnet18),
        "resnet34": BackboneEntry(resnet.resnet34),
        "resnet50": BackboneEntry(resnet.resnet50),
        "resnet101": BackboneEntry(resnet.resnet101),
        "tiny": BackboneEntry(resnet.tiny),
        "small": BackboneEntry(resnet.small),
        "resnet50_ibn_a": BackboneEntry(resnet_ibn.resnet50_ibn_a),
        "resnet50_ibn_b": BackboneEntry(resnet_ibn.resnet50_ibn_b),
        "resnet_ibn_a_tiny": BackboneEntry(resnet_ibn.resnet_ibn_a_tiny),
        "resnet_ibn_b_tiny": BackboneEntry(resnet_ibn.resnet_ibn_b_tiny),
        "osnet_x1_0": osnet_entry(osnet.osnet_x1_0),
        "osnet_x0_75": osnet_entry(osnet.osnet_x0_75),
        "osnet_x0_5": osnet_entry(osnet.osnet_x0_5),
        "osnet_x0_25": osnet_entry(osnet.osnet_x0_25),
        "osnet_ibn_x1_0": osnet_entry(osnet.osnet_ibn_x1_0),
        "osnet_ain_x1_0": osnet_entry(osnet_ain.osnet_ain_x1_0),
        "osnet_tiny": osnet_entry(osnet.osnet_tiny, 128),
        "osnet_ibn_tiny": osnet_entry(osnet.osnet_ibn_tiny, 128),
        "osnet_ain_tiny": osnet_entry(osnet_ain.osnet_ain_tiny, 128),
        "mobilenetv2_x1_0": BackboneEntry(mobilenetv2.mobilenetv2_x1_0),
        "mobilenetv2_x1_4": BackboneEntry(mobilenetv2.mobilenetv2_x1_4),
        "mobilenetv2_tiny": BackboneEntry(mobilenetv2.mobilenetv2_tiny),
    }
    for name, entry in builtin.items():
        register_backbone(name, entry)


_register_builtin()
