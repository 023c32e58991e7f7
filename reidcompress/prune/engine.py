"""The dependency-graph engine: which coupled channel groups may be pruned, scoring, and the surgery.

Channels are physically removed with torch-pruning's ``DependencyGraph``, which knows what is coupled
(a conv's filters, its BatchNorm, the next conv's input channels, every member of a residual sum).
The criteria, the choice of groups and the channel counts are ours.

Protected, whatever the options: the stem conv (the survey's first layer), the embedding width (the
last conv writing layer4's residual stream and the BNNeck, so gallery features stay compatible) and
the ID classifier. Ignoring only the classifier would not protect the embedding: it is an input-side
member of layer4's residual group, and torch-pruning only skips a group whose *output-side* member is
ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from reidcompress.errors import MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.models.resnet import STAGES
from reidcompress.prune.criteria import Criterion

__all__ = [
    "ScoredGroup",
    "build_graph",
    "blocks",
    "residual_writers",
    "protected_modules",
    "prunable_groups",
    "score_groups",
    "select_channels",
    "apply_plan",
    "zero_channels",
]

TRACE_SIZE = (64, 32)


@dataclass(frozen=True)
class ScoredGroup:
    """One prunable group, scored before any surgery.

    Attributes:
        root: name of the group's root conv (the handle used to prune it later, also on a copy).
        scores: one raw criterion score per channel (low = pruned first).
        out_convs: convs whose output channels the group removes.
        in_convs: convs whose input channels the group removes.
        residual: whether the group is a residual-stream group (coupled across blocks).
    """

    root: str
    scores: torch.Tensor
    out_convs: tuple[str, ...]
    in_convs: tuple[str, ...]
    residual: bool

    @property
    def size(self) -> int:
        return int(self.scores.numel())


def _graph_forward(model: ReIDNet, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # Embedding AND logits, so the BNNeck and the classifier are part of the traced graph.
    feat, logits = model.forward_train(images)
    emb = model.bnneck(feat)
    return (emb,) if logits is None else (emb, logits)


def build_graph(model: ReIDNet) -> tp.DependencyGraph:
    """Trace ``model`` (grad enabled, as torch-pruning requires); the model's train/eval mode is kept."""
    was_training = model.training
    ref = next(model.parameters())
    # The graph does not depend on the image size; a small one makes tracing ResNet50 ~3x faster.
    h, w = (min(a, b) for a, b in zip(model.config.input_size, TRACE_SIZE, strict=True))
    x = torch.zeros(1, 3, h, w, device=ref.device, dtype=ref.dtype)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, x, forward_fn=_graph_forward, verbose=False)
    finally:
        model.train(was_training)


def blocks(model: ReIDNet) -> list[Any]:
    """The residual blocks of the backbone, in forward order."""
    return [block for stage in STAGES for block in getattr(model.backbone, stage)]


def _last_conv(block: Any) -> nn.Conv2d:
    return block.conv3 if hasattr(block, "conv3") else block.conv2


def residual_writers(model: ReIDNet) -> list[nn.Conv2d]:
    """Convs whose outputs are added into the residual stream: each block's last conv and downsample."""
    convs = []
    for block in blocks(model):
        convs.append(_last_conv(block))
        if block.downsample is not None:
            convs.append(block.downsample[0])
    return convs


def protected_modules(model: ReIDNet, residual: bool) -> list[nn.Module]:
    """Modules whose groups are never pruned (see the module docstring); with ``residual=False`` also
    every residual writer, which leaves exactly the block-internal channels, as the survey prunes."""
    keep: list[nn.Module] = [model.backbone.conv1, _last_conv(model.backbone.layer4[-1])]
    if isinstance(model.bnneck, nn.BatchNorm1d):
        keep.append(model.bnneck)
    if model.classifier is not None:
        keep.append(model.classifier)
    if not residual:
        keep.extend(residual_writers(model))
    return keep


def prunable_groups(model: ReIDNet, graph: tp.DependencyGraph, residual: bool) -> list[tp.Group]:
    """Every conv-rooted group with full channel indices, minus the protected ones."""
    ignored = protected_modules(model, residual)
    return list(graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d]))


def _conv_names(group: tp.Group, handler: object, names: Mapping[nn.Module, str]) -> tuple[str, ...]:
    return tuple(
        names[dep.target.module]
        for dep, _ in group
        if dep.handler == handler and isinstance(dep.target.module, nn.Conv2d)
    )


def score_groups(
    model: ReIDNet, criterion: Criterion, residual: bool, graph: tp.DependencyGraph | None = None
) -> list[ScoredGroup]:
    """Score all prunable groups of the unpruned model (scoring after a partial surgery would rank
    the remaining channels of another network). ``graph``: a graph of ``model`` to reuse."""
    graph = graph or build_graph(model)
    names = {m: n for n, m in model.named_modules()}
    writers = set(residual_writers(model))
    scored = []
    for group in prunable_groups(model, graph, residual):
        scores = criterion(group).detach().float().cpu()
        if scores.shape != (len(group[0].idxs),):
            raise MethodError(
                f"criterion {criterion.name!r} returned {tuple(scores.shape)} scores for a group of "
                f"{len(group[0].idxs)} channels"
            )
        outs = _conv_names(group, tp.prune_conv_out_channels, names)
        scored.append(
            ScoredGroup(
                root=names[group[0].dep.target.module],
                scores=scores,
                out_convs=outs,
                in_convs=_conv_names(group, tp.prune_conv_in_channels, names),
                residual=any(model.get_submodule(n) in writers for n in outs),
            )
        )
    return scored


def select_channels(groups: Sequence[ScoredGroup], kept: Mapping[str, int]) -> dict[str, list[int]]:
    """Per group root, the indices of the lowest-scored channels beyond the ``kept`` count."""
    plan = {}
    for g in groups:
        n_prune = g.size - kept[g.root]
        order = torch.argsort(g.scores, stable=True)
        plan[g.root] = sorted(order[:n_prune].tolist()) if n_prune > 0 else []
    return plan


def _groups_for(model: ReIDNet, graph: tp.DependencyGraph, plan: Mapping[str, Sequence[int]]) -> list[tp.Group]:
    groups = []
    for root, idxs in plan.items():
        if not idxs:
            continue
        group = graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels, list(idxs))
        if not graph.check_pruning_group(group):
            raise MethodError(f"pruning {len(idxs)} channels of {root} would remove a whole layer")
        groups.append(group)
    return groups


def apply_plan(model: ReIDNet, plan: Mapping[str, Sequence[int]]) -> None:
    """Physically remove, in place, the channels ``plan`` names (root conv name -> channel indices)."""
    for group in _groups_for(model, build_graph(model), plan):
        group.prune()


@torch.no_grad()
def zero_channels(model: ReIDNet, graph: tp.DependencyGraph, plan: Mapping[str, Sequence[int]]) -> None:
    """Soft pruning: zero the planned channels' filters and BN affine parameters without removing them.

    With the BN scale and shift at zero as well, a zeroed channel outputs exactly 0 (in every member of
    a residual group), so removing it later leaves the network's function unchanged.
    """
    for group in _groups_for(model, graph, plan):
        for dep, idxs in group:
            m = dep.target.module
            is_filter = dep.handler == tp.prune_conv_out_channels and isinstance(m, nn.Conv2d)
            is_bn = dep.handler == tp.prune_batchnorm_out_channels and isinstance(m, nn.BatchNorm2d)
            for p in (m.weight, m.bias) if is_filter or is_bn else ():
                if p is not None:
                    p[list(idxs)] = 0
