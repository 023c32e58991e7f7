"""Rebuild layers at new widths: how a pruned model is recreated from stored shapes alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

__all__ = ["resize_modules", "weight_shapes"]


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
