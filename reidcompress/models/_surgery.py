"""Rebuild layers at new widths: how a pruned model is recreated from stored shapes alone.

Everything pruning changes besides weight shapes follows from them: a depthwise convolution's
``groups`` is its output width, an IBN module's split point is its InstanceNorm's width
(``resnet_ibn.IBN.half``), OSNet's shared ChannelGate is one module with one set of shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)

__all__ = ["resize_modules", "weight_shapes", "narrow_widths"]


def weight_shapes(state_dict: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """Shapes of every ``*.weight`` entry of a state dict (tensors only)."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if k.endswith(".weight") and hasattr(v, "shape")}


def _pair(v: tuple[int, ...]) -> tuple[int, int]:
    return int(v[0]), int(v[-1])


def _resized(module: nn.Module, shape: Sequence[int]) -> nn.Module | None:
    if isinstance(module, nn.Conv2d):
        out_c, in_per_group = shape[0], shape[1]
        if (out_c, in_per_group) == (module.out_channels, module.in_channels // module.groups):
            return None
        # A grouped conv here is depthwise (OSNet, MobileNetV2): one group per output channel.
        groups = module.groups if module.groups == 1 else out_c
        return nn.Conv2d(
            in_per_group * groups,
            out_c,
            _pair(module.kernel_size),
            _pair(module.stride),
            module.padding if isinstance(module.padding, str) else _pair(module.padding),
            _pair(module.dilation),
            groups,
            module.bias is not None,
            module.padding_mode,
        )
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if shape[0] == module.num_features:
            return None
        return type(module)(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    if isinstance(module, nn.InstanceNorm2d) and module.affine:
        if shape[0] == module.num_features:
            return None
        norm = nn.InstanceNorm2d(shape[0], module.eps, affine=True, track_running_stats=module.track_running_stats)
        norm.momentum = module.momentum
        return norm
    if isinstance(module, nn.Linear):
        if tuple(shape) == (module.out_features, module.in_features):
            return None
        return nn.Linear(shape[1], shape[0], bias=module.bias is not None)
    return None


def resize_modules(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """Replace each Conv2d/BatchNorm/Linear whose ``<name>.weight`` shape in ``shapes`` differs.

    Returns the names of the replaced modules. Kernel size, stride, padding, bias and
    ``requires_grad`` flags are kept; only channel counts change.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        if key not in shapes:
            continue
        new = _resized(module, shapes[key])
        if new is None:
            continue
        for p_name, p in module.named_parameters(recurse=False):
            getattr(new, p_name).requires_grad_(p.requires_grad)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        replaced.append(name)
    return replaced


def narrow_widths(net: M, divisor: int) -> M:
    """Divide every layer's width by ``divisor`` (the RGB input excepted): tiny test variants of the
    real architectures, with the same module structure and parameter names."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.groups > 1:
                in_per_group = 1
            else:
                in_per_group = m.in_channels if m.in_channels == 3 else max(m.in_channels // divisor, 1)
            shapes[f"{name}.weight"] = (max(m.out_channels // divisor, 1), in_per_group, *m.kernel_size)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            shapes[f"{name}.weight"] = (max(m.num_features // divisor, 1),)
    resize_modules(net, shapes)
    return net
