"""What torch-pruning 1.6.1 cannot prune by itself, added through its own extension mechanism.

IBN (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net", ECCV
2018) normalises the first ``half`` channels of a feature map with an InstanceNorm and the rest with a
BatchNorm. Traced as plain layers, torch-pruning prunes the two norms but cannot move the split point
(``torch.split`` by a stored size), the gap upstream issue #200 reports. Registered as a customized
layer (``DependencyGraph.build_dependency(customized_pruners=...)``), an IBN module is one node whose
in- and out-channels are tied (``prune_in_channels = prune_out_channels``, as torch-pruning's own
norm pruners): removing channel ``c`` removes it from the InstanceNorm when ``c < half``, from the
BatchNorm otherwise, and the split moves with the InstanceNorm's width. The pruned module computes
what a fresh IBN of the new widths computes with the kept parameters.

torch-pruning still traces *through* a customized module's forward (its ``grad_fn`` walk does not stop
at module boundaries), and maps channel indices through IBN's internal split and concatenation wrongly
(conv channel 0, an InstanceNorm channel, comes out as a BatchNorm channel). So while the graph is
built, each customized layer runs as one autograd node (``leaf_modules``): the tracer sees it as a
single operation between its producer and its consumers, which is what ``customized_pruners`` assumes.

Depthwise convolutions and OSNet's channel gate (a module called once per stream, its ``x * gate``
a broadcast product) are handled by torch-pruning's graph itself: the depthwise pruner ties a
depthwise conv's input and output channels (and ``groups``) to its producer, and the four calls of a
shared gate tie the four streams' channels to the gate's ``fc1`` inputs and ``fc2`` outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from reidcompress.errors import MethodError

__all__ = [
    "IBNPruner",
    "IBN_PRUNER",
    "is_ibn",
    "is_depthwise",
    "customized_pruners",
    "NORM_HANDLERS",
    "affine_params",
    "check_norm_halves",
    "norm_halves",
    "leaf_modules",
]


def is_ibn(module: nn.Module) -> bool:
    """An IBN layer: an ``IN`` InstanceNorm2d on the first channels and a ``BN`` BatchNorm2d on the rest."""
    return isinstance(getattr(module, "IN", None), nn.InstanceNorm2d) and isinstance(
        getattr(module, "BN", None), nn.BatchNorm2d
    )


def is_depthwise(conv: nn.Module) -> bool:
    """A depthwise convolution: one group per channel (torch-pruning's own test)."""
    return isinstance(conv, nn.Conv2d) and conv.groups > 1 and conv.groups == conv.out_channels


class IBNPruner(tp.pruner.function.BasePruningFunc):
    """Prunes an IBN layer's channels across its InstanceNorm and BatchNorm halves."""

    def prune_out_channels(self, layer: Any, idxs: Sequence[int]) -> nn.Module:
        half = int(layer.IN.num_features)
        first = sorted({int(i) for i in idxs if i < half})
        rest = sorted({int(i) - half for i in idxs if i >= half})
        if first:
            tp.prune_instancenorm_out_channels(layer.IN, first)
        if rest:
            tp.prune_batchnorm_out_channels(layer.BN, rest)
        # A module that stores the split (torchreid's) rather than reading it from the IN width.
        if "half" in vars(layer):
            layer.half = int(layer.IN.num_features)
        return layer

    prune_in_channels = prune_out_channels  # in and out channels are the same channels

    def get_out_channels(self, layer: Any) -> int:
        return int(layer.IN.num_features) + int(layer.BN.num_features)

    get_in_channels = get_out_channels


IBN_PRUNER = IBNPruner()

# The handlers that remove a normalisation layer's channels (its output is the channel's activation).
NORM_HANDLERS = (tp.prune_batchnorm_out_channels, tp.prune_instancenorm_out_channels, IBN_PRUNER.prune_out_channels)


def customized_pruners(model: nn.Module) -> dict[Any, tp.pruner.function.BasePruningFunc]:
    """The custom pruners ``model`` needs, keyed by layer type, for ``build_dependency``."""
    return {type(m): IBN_PRUNER for m in model.modules() if is_ibn(m)}


def affine_params(module: Any, idxs: Sequence[int]) -> list[tuple[torch.Tensor, list[int]]]:
    """The affine scale and shift parameters of a norm layer's channels ``idxs``, each with its indices.

    Zeroing them silences the channels: a BatchNorm, InstanceNorm or IBN channel whose scale and shift
    are zero outputs exactly 0.
    """
    if is_ibn(module):
        half = int(module.IN.num_features)
        first = [int(i) for i in idxs if i < half]
        rest = [int(i) - half for i in idxs if i >= half]
        return affine_params(module.IN, first) + affine_params(module.BN, rest)
    params = [getattr(module, "weight", None), getattr(module, "bias", None)]
    return [(p, list(idxs)) for p in params if isinstance(p, torch.Tensor) and idxs]


def norm_halves(group: tp.Group) -> tuple[tuple[int, ...], ...]:
    """The positions of ``group``'s channels (in its root's order) that fall in each half of an IBN
    layer the group prunes: every half must keep at least one channel."""
    halves = []
    for dep, idxs in group:
        if dep.handler == IBN_PRUNER.prune_out_channels:
            half = int(dep.target.module.IN.num_features)
            halves.append(tuple(p for p, i in enumerate(idxs) if i < half))
            halves.append(tuple(p for p, i in enumerate(idxs) if i >= half))
    return tuple(h for h in halves if h)


def check_norm_halves(group: tp.Group, root: str) -> None:
    """Refuse a group that would empty one norm of an IBN layer (an IBN needs both halves)."""
    for dep, idxs in group:
        m: Any = dep.target.module
        if dep.handler == IBN_PRUNER.prune_out_channels:
            half = int(m.IN.num_features)
            first = sum(1 for i in idxs if i < half)
            if first >= half or len(idxs) - first >= m.BN.num_features:
                raise MethodError(
                    f"pruning {len(idxs)} channels of {root} would remove a whole InstanceNorm or BatchNorm half "
                    "of an IBN layer; use a lower rate"
                )


class _Leaf(torch.autograd.Function):
    """``forward(x)`` of a module as one autograd node whose only input is ``x`` (tracing only)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        # A copy: InstanceNorm returns a view, and a view out of a Function cannot be modified in place
        # (the in-place ReLU after it).
        return forward(x).clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


@contextlib.contextmanager
def leaf_modules(model: nn.Module) -> Iterator[None]:
    """While tracing, every IBN layer (customized pruner) and InstanceNorm2d is one node of the traced graph.

    ``F.instance_norm`` runs a batch norm on an (1, N*C, H, W) view: traced through, its reshapes
    decouple the InstanceNorm from the channels it normalises (IBN-b's residual InstanceNorm was left
    unpruned); as one node, torch-pruning's own ``InstanceNormPruner`` ties its channels.
    """
    layers = [m for m in model.modules() if is_ibn(m) or isinstance(m, nn.InstanceNorm2d)]
    for m in layers:
        m.forward = lambda x, _f=m.forward: _Leaf.apply(x, _f)  # type: ignore[method-assign]  # shadows the method
    try:
        yield
    finally:
        for m in layers:
            del m.forward
