"""The dependency-graph engine: which coupled channel groups may be pruned, scoring, and the surgery.

Channels are physically removed with torch-pruning's ``DependencyGraph``, which knows what is coupled
(a conv's filters, its BatchNorm, the next conv's input channels, every member of a residual sum,
a depthwise conv with its producer, the streams sharing an OSNet channel gate); the layers it cannot
prune itself (IBN) get a pruner of their own, registered with it (``_pruners``). The criteria, the
choice of groups and the channel counts are ours.

Protected, whatever the options: the stem conv (the survey's first layer), the embedding width (the
last conv writing the final feature map unless an embedding layer such as OSNet's ``fc`` follows it,
and the BNNeck, so gallery features stay compatible) and the ID classifier. Ignoring only the
classifier would not protect the embedding: it is an input-side member of the last residual group,
and torch-pruning only skips a group whose *output-side* member is ignored.
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
from reidcompress.prune._pruners import (
    NORM_HANDLERS,
    affine_params,
    check_norm_halves,
    customized_pruners,
    leaf_modules,
    norm_halves,
)
from reidcompress.prune.criteria import Criterion

__all__ = [
    "ScoredGroup",
    "build_graph",
    "blocks",
    "block_of",
    "crosses_blocks",
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
        keep_one_of: sets of channels of which at least one must stay (the halves of an IBN layer).
    """

    root: str
    scores: torch.Tensor
    out_convs: tuple[str, ...]
    in_convs: tuple[str, ...]
    residual: bool
    keep_one_of: tuple[tuple[int, ...], ...] = ()

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
        with torch.enable_grad(), leaf_modules(model):
            return tp.DependencyGraph().build_dependency(
                model, x, forward_fn=_graph_forward, verbose=False, customized_pruners=customized_pruners(model)
            )
    finally:
        model.train(was_training)


def blocks(model: ReIDNet) -> list[Any]:
    """The residual blocks of a ResNet backbone, in forward order."""
    return [block for stage in STAGES for block in getattr(model.backbone, stage)]


def block_of(name: str) -> str:
    """The block a module belongs to: its name up to the first index into a stage (``backbone.layer1.0``,
    OSNet's ``backbone.conv2.1``, MobileNetV2's ``backbone.conv3.2``), or its top-level layer (the stem,
    OSNet's ``conv5``, the head)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:2]) if parts[0] == "backbone" else parts[0]


def _feature_writer(model: ReIDNet) -> nn.Conv2d:
    """The last convolution of the backbone's forward pass: it writes the final feature map."""
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda m, *_: order.append(m))
        for m in model.backbone.modules()
        if isinstance(m, nn.Conv2d)
    ]
    ref = next(model.parameters())
    h, w = (min(a, b) for a, b in zip(model.config.input_size, TRACE_SIZE, strict=True))
    try:
        with torch.no_grad():
            model.backbone(torch.zeros(1, 3, h, w, device=ref.device, dtype=ref.dtype))
    finally:
        for handle in hooks:
            handle.remove()
    return order[-1]


def protected_modules(model: ReIDNet) -> list[nn.Module]:
    """Modules whose groups are never pruned (see the module docstring): the convs reading the image,
    the BNNeck and the classifier, and, when the pooled feature map is the embedding (no embedding
    layer such as OSNet's ``fc``), the conv writing that map."""
    keep: list[nn.Module] = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3]
    if isinstance(model.bnneck, nn.BatchNorm1d):
        keep.append(model.bnneck)
    if model.classifier is not None:
        keep.append(model.classifier)
    if not getattr(model.config, "fc_dim", 0):
        keep.append(_feature_writer(model))
    return keep


def crosses_blocks(group: tp.Group, names: Mapping[nn.Module, str]) -> bool:
    """Whether the group's channels leave a block: a residual stream, or a block's output read by the
    next block. ``--no-residual`` prunes only the others (the block-internal channels the survey prunes)."""
    return len({block_of(names[dep.target.module]) for dep, _ in group if dep.target.module in names}) > 1


def prunable_groups(model: ReIDNet, graph: tp.DependencyGraph, residual: bool) -> list[tp.Group]:
    """Every conv-rooted group with full channel indices, minus the protected ones.

    A group without a norm layer is kept whole: the hidden layer of OSNet's channel gate, a 1x1 conv on
    the pooled map (a few channels, ~0.01% of the FLOPs), has no normalised activation for the
    data-driven criteria to score, and every method prunes the same groups.
    """
    found = graph.get_all_groups(ignored_layers=protected_modules(model), root_module_types=[nn.Conv2d])
    groups = [g for g in found if any(dep.handler in NORM_HANDLERS for dep, _ in g)]
    if residual:
        return groups
    names = {m: n for n, m in model.named_modules()}
    return [g for g in groups if not crosses_blocks(g, names)]


def _conv_names(group: tp.Group, handlers: tuple[object, ...], names: Mapping[nn.Module, str]) -> tuple[str, ...]:
    return tuple(
        names[dep.target.module]
        for dep, _ in group
        if dep.handler in handlers and isinstance(dep.target.module, nn.Conv2d)
    )


def score_groups(
    model: ReIDNet, criterion: Criterion, residual: bool, graph: tp.DependencyGraph | None = None
) -> list[ScoredGroup]:
    """Score all prunable groups of the unpruned model (scoring after a partial surgery would rank
    the remaining channels of another network). ``graph``: a graph of ``model`` to reuse."""
    graph = graph or build_graph(model)
    names = {m: n for n, m in model.named_modules()}
    scored = []
    for group in prunable_groups(model, graph, residual):
        scores = criterion(group).detach().float().cpu()
        if scores.shape != (len(group[0].idxs),):
            raise MethodError(
                f"criterion {criterion.name!r} returned {tuple(scores.shape)} scores for a group of "
                f"{len(group[0].idxs)} channels"
            )
        # A depthwise conv's input and output channels go together: it is listed once, as an output.
        outs = _conv_names(group, (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels), names)
        scored.append(
            ScoredGroup(
                root=names[group[0].dep.target.module],
                scores=scores,
                out_convs=outs,
                in_convs=_conv_names(group, (tp.prune_conv_in_channels,), names),
                residual=crosses_blocks(group, names),
                keep_one_of=norm_halves(group),
            )
        )
    return scored


def select_channels(groups: Sequence[ScoredGroup], kept: Mapping[str, int]) -> dict[str, list[int]]:
    """Per group root, the indices of the lowest-scored channels beyond the ``kept`` count (an IBN layer's
    InstanceNorm and BatchNorm halves keep one channel each, whatever the scores)."""
    return {g.root: _lowest(g, g.size - kept[g.root]) for g in groups}


def _lowest(group: ScoredGroup, n_prune: int) -> list[int]:
    """The ``n_prune`` lowest-scored channels, except that each of ``keep_one_of``'s sets keeps its best
    channel: the next lowest-scored channel outside the set goes instead."""
    order = torch.argsort(group.scores, stable=True).tolist()
    chosen = order[: max(n_prune, 0)]
    for part in group.keep_one_of:
        if n_prune < group.size - 1 and set(part) <= set(chosen):
            chosen.remove(max(part, key=lambda i: float(group.scores[i])))
            chosen.append(next(i for i in order if i not in chosen and i not in part))
    return sorted(chosen)


def _groups_for(model: ReIDNet, graph: tp.DependencyGraph, plan: Mapping[str, Sequence[int]]) -> list[tp.Group]:
    groups = []
    for root, idxs in plan.items():
        if not idxs:
            continue
        group = graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels, list(idxs))
        if not graph.check_pruning_group(group):
            raise MethodError(f"pruning {len(idxs)} channels of {root} would remove a whole layer")
        check_norm_halves(group, root)
        groups.append(group)
    return groups


def apply_plan(model: ReIDNet, plan: Mapping[str, Sequence[int]]) -> None:
    """Physically remove, in place, the channels ``plan`` names (root conv name -> channel indices)."""
    for group in _groups_for(model, build_graph(model), plan):
        group.prune()


@torch.no_grad()
def zero_channels(model: ReIDNet, graph: tp.DependencyGraph, plan: Mapping[str, Sequence[int]]) -> None:
    """Soft pruning: zero the planned channels' filters and norm affine parameters without removing them.

    With the norm's scale and shift at zero as well (BatchNorm, InstanceNorm or both halves of an IBN),
    a zeroed channel outputs exactly 0 (in every member of a residual group; a channel gate's product
    with it too), so removing it later leaves the network's function unchanged.
    """
    filters = (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels)
    for group in _groups_for(model, graph, plan):
        for dep, idxs in group:
            m = dep.target.module
            params: list[tuple[torch.Tensor, list[int]]] = []
            if dep.handler in filters and isinstance(m, nn.Conv2d):
                params = [(p, list(idxs)) for p in (m.weight, m.bias) if p is not None]
            elif dep.handler in NORM_HANDLERS:
                params = affine_params(m, idxs)
            for p, channels in params:
                p[channels] = 0
