"""Pruning by minimising the next layer's reconstruction error, layer by layer: ``thinet``, ``channel_pruning``.

The survey's fourth strategy (its Table 1). The kept-channel counts are planned first, exactly as for
the one-shot methods (``--rate``/``--target-flops``, ``--scope``, ``--round-to``), so the budget lands
the same way. Then the network is walked block by block, in forward order, on calibration images:

1. the original network's outputs of every consumer convolution of the block (the next layer of a
   pruned group) are recorded at sampled positions: the reconstruction targets;
2. for each consumer in turn, the input patches of the network pruned so far are gathered at the same
   positions (a forward pass stopped at the consumer), the method selects the channels to keep
   (``criterion.select``) and refits the consumer's weights (``criterion.reconstruct``); the removed
   channels' weights are set to zero, so the network computes exactly what the pruned one will, and
   the fit's intercept goes into the consumer's BatchNorm running mean;
3. the block's outputs of both networks become the next block's inputs.

At the end the selected channels are removed by the dependency-graph surgery (which leaves the
function unchanged: their weights are already zero). Only the activations at the current block's
input are held, for both networks: about 2 GB for ResNet50 at 256x128 with the default 8 x 64
calibration images (layer1's outputs), half that from layer2 on. Everything runs on the model's device.

With ``--residual``, a residual-stream group's consumers span a whole stage and the next one, so it
cannot be selected layer by layer: its channels are chosen up front by their contribution to all its
consumers (the criterion's planning score) and silenced, and then every consumer of the stream (each
block's first conv, the downsample) is still refitted by least squares in its turn, so the later
layers compensate for the removed stream channels. Block-internal groups are selected by the method.

Beyond ResNets the walk is the same, over the backbone's units (its children, stages expanded into
their blocks; checked to compose to the backbone's forward). A group read by several layers (an
OSNet block's input to its four streams, the streams' sum read by ``conv3`` and the shared channel
gate) is chosen up front like a residual group, and its consumers are refitted; a consumer called
more than once per forward (the gate's ``fc1``) keeps its weights. A depthwise conv is never a
consumer: it is pruned with its producer, and the layer reading its output is the one refitted. The
intercept goes into the norm right after the consumer: a BatchNorm's running mean, an IBN's
BatchNorm half (an InstanceNorm removes a constant per channel exactly); a consumer followed by no
norm (OSNet's ``LightConv3x3`` 1x1 conv, followed by its depthwise conv) drops it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from reidcompress.errors import MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune._pruners import is_ibn
from reidcompress.prune.criteria import Criterion, L1Norm
from reidcompress.prune.criteria._reconstruction import (
    SAMPLES_PER_IMAGE,
    LayerStats,
    Positions,
    ReconstructionCriterion,
    contribution_gram,
    gather_outputs,
    gather_patches,
    sample_positions,
)
from reidcompress.prune.engine import ScoredGroup, apply_plan, build_graph, select_channels, zero_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.oneshot import plan_kept, score_model
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData

__all__ = ["run_reconstruction"]


class _Stop(Exception):
    """Ends a forward pass once the consumer's input has been seen."""


def _norms_after(model: nn.Module, graph: tp.DependencyGraph) -> dict[str, nn.Module]:
    """Per conv name, the norm layer that reads its output directly (BatchNorm, InstanceNorm, IBN)."""
    norms = {}
    for name, m in model.named_modules():
        node = graph.module2node.get(m) if isinstance(m, nn.Conv2d) else None
        outs = node.outputs if node is not None else []
        if len(outs) == 1 and (
            isinstance(outs[0].module, (nn.BatchNorm2d, nn.InstanceNorm2d)) or is_ibn(outs[0].module)
        ):
            norms[name] = outs[0].module
    return norms


def _fold_intercept(norm: Any, intercept: torch.Tensor) -> None:
    """Subtract the fit's intercept from the BatchNorm (half) after the consumer; see the module doc."""
    if norm is not None and is_ibn(norm):
        norm, intercept = norm.BN, intercept[int(norm.IN.num_features) :]
    if isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None:
        norm.running_mean -= intercept.to(norm.running_mean)


def _consumer_inputs(
    block: nn.Module, conv: nn.Conv2d, frontier: list[torch.Tensor], pos: list[Positions]
) -> Iterator[torch.Tensor]:
    """Yield the input patches of ``conv`` at ``pos`` for each frontier batch, stopping the pass there."""
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(gather_patches(inputs[0], conv, pos[len(seen)]))
        raise _Stop

    handle = conv.register_forward_pre_hook(hook)
    try:
        for x in frontier:
            with contextlib.suppress(_Stop):
                block(x)
            yield seen[-1]
    finally:
        handle.remove()


class _Pass:
    """The state of the block-by-block walk: both networks' block inputs, the plan so far."""

    def __init__(
        self,
        model: ReIDNet,
        criterion: ReconstructionCriterion,
        groups: list[ScoredGroup],
        kept: Mapping[str, int],
        plan: dict[str, list[int]],
        refittable: set[str],
        norms: Mapping[str, nn.Module],
    ) -> None:
        self.model, self.criterion, self.kept, self.plan = model, criterion, kept, plan
        # Each consumer reads the channels of exactly one group.
        self.owner = {c: g for g in groups for c in g.in_convs if kept[g.root] < g.size and c in refittable}
        self.norms = norms
        self.names = {m: n for n, m in model.named_modules()}
        self.generator = torch.Generator().manual_seed(0)

    def targets(
        self, block: nn.Module, consumers: list[str], frontier: list[torch.Tensor]
    ) -> tuple[dict[str, list[Positions]], dict[str, list[torch.Tensor]]]:
        """Each consumer's sampled positions and original outputs per batch; ``frontier`` is advanced in
        place to the original block's outputs."""
        pos: dict[str, list[Positions]] = {c: [] for c in consumers}
        ys: dict[str, list[torch.Tensor]] = {c: [] for c in consumers}

        def hook(conv: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
            name = local[conv]
            p = sample_positions(out.shape[0], out.shape[2], out.shape[3], SAMPLES_PER_IMAGE, self.generator)
            pos[name].append(p)
            ys[name].append(gather_outputs(out, p))

        local = {block.get_submodule(c): c for c in consumers}
        handles = [m.register_forward_hook(hook) for m in local]
        try:
            _advance(block, frontier)
        finally:
            for h in handles:
                h.remove()
        return pos, ys

    def refit(
        self,
        block: nn.Module,
        prefix: str,
        name: str,
        frontier: list[torch.Tensor],
        pos: dict[str, list[Positions]],
        ys: dict[str, list[torch.Tensor]],
    ) -> None:
        """Select the channels ``name`` reads (unless fixed up front), refit it, fold the intercept."""
        conv = block.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        full = f"{prefix}.{name}"
        group = self.owner[full]
        stats = LayerStats(conv.weight[0].numel(), conv.out_channels, conv.weight.device)
        for x, y in zip(_consumer_inputs(block, conv, frontier, pos[name]), ys[name], strict=True):
            stats.add(x, y)
        gram, r, yy = contribution_gram(stats, conv.weight)
        if group.root in self.plan:  # chosen up front (a residual or several-consumer group)
            removed = set(self.plan[group.root])
            keep = torch.tensor([c for c in range(group.size) if c not in removed], dtype=torch.long)
        else:
            keep = self.criterion.select(gram, r, yy, self.kept[group.root])
            self.plan[group.root] = sorted(set(range(group.size)) - set(keep.tolist()))
        weight, intercept = self.criterion.reconstruct(stats, conv.weight, keep, gram, r)
        conv.weight.zero_()
        conv.weight[:, keep.to(conv.weight.device)] = weight.to(conv.weight.dtype)
        _fold_intercept(self.norms.get(full), intercept)


def _advance(block: nn.Module, frontier: list[torch.Tensor]) -> None:
    """Replace each batch by the block's output, one at a time: only one extra batch is ever held."""
    for i, x in enumerate(frontier):
        frontier[i] = block(x)


@torch.no_grad()
def _reconstruct_block(
    walk: _Pass, block: nn.Module, original: nn.Module, current: list[torch.Tensor], reference: list[torch.Tensor]
) -> None:
    """Select and refit every consumer of ``block`` in forward order, then advance both networks' inputs."""
    prefix = walk.names[block]
    consumers = [n for n, m in block.named_modules() if isinstance(m, nn.Conv2d) and f"{prefix}.{n}" in walk.owner]
    pos, ys = walk.targets(original, consumers, reference)
    for name in consumers:
        walk.refit(block, prefix, name, current, pos, ys)
    _advance(block, current)


def _units(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's children in order, each stage (a Sequential) expanded into its blocks."""
    units: list[nn.Module] = []
    for child in backbone.children():
        units.extend(child if isinstance(child, nn.Sequential) else [child])
    return units


@torch.no_grad()
def _check_units(model: ReIDNet, units: list[nn.Module], images: torch.Tensor) -> None:
    x = model.normalize(images[:2])
    for unit in units:
        x = unit(x)
    ref = model.forward_features(images[:2])
    if x.shape != ref.shape or not torch.allclose(x, ref, rtol=1e-4, atol=1e-5):
        raise MethodError("reconstruction walks the backbone's children in order; this backbone's forward differs")


def _forward_counts(model: ReIDNet, images: torch.Tensor) -> dict[str, int]:
    """How many times each convolution runs in one forward pass (OSNet's shared gate runs four times)."""
    counts: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, *_: Any) -> None:
        counts[names[m]] = counts.get(names[m], 0) + 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in handles:
            h.remove()
    return counts


def _refittable(model: ReIDNet, images: torch.Tensor) -> set[str]:
    """Convolutions that least squares can refit: ungrouped, numeric padding, run once per forward."""
    counts = _forward_counts(model, images)
    return {
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups == 1 and not isinstance(m.padding, str) and counts.get(n) == 1
    }


def _fixed_up_front(groups: list[ScoredGroup], refittable: set[str]) -> list[ScoredGroup]:
    """Groups the walk cannot select layer by layer: residual, not read by exactly one refittable conv, or
    with channels that must keep one of each set (an IBN layer's halves, which a consumer's refit cannot see)."""
    return [g for g in groups if g.residual or g.keep_one_of or len(g.in_convs) != 1 or g.in_convs[0] not in refittable]


def _plan_counts(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None, refittable: set[str]
) -> tuple[list[ScoredGroup], dict[str, int]]:
    # Local scope with every group selected layer by layer needs no score to plan: skip the calibration pass.
    groups = score_model(model, L1Norm(), options, data)
    if options.scope == "global" or _fixed_up_front(groups, refittable):
        groups = score_model(model, criterion, options, data)
    planner = criterion if options.scope == "global" or options.residual else L1Norm()
    flops = None
    if options.target_flops is not None:
        flops = count_flops(model, model.config.input_size) * options.target_flops
    return groups, plan_kept(model, groups, planner, options, rate=options.rate, flops=flops)


def run_reconstruction(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None
) -> StrategyResult:
    """Plan the counts, select and refit layer by layer on calibration images, remove; see the module doc."""
    if not isinstance(criterion, ReconstructionCriterion):
        raise MethodError(f"{criterion.name!r} is not a reconstruction criterion")
    assert data is not None  # PruneOptions.check guarantees it
    device = next(model.parameters()).device
    images = [b[0].to(device) for b in data.calibration_batches(model.config.input_size, options.calib_batches)]
    if not images:
        raise MethodError(f"{criterion.name}: the calibration data gave no batch")
    was_training = model.training
    model.eval()
    units = _units(model.backbone)
    _check_units(model, units, images[0])
    refittable = _refittable(model, images[0])
    groups, kept = _plan_counts(model, criterion, options, data, refittable)
    plan = select_channels(_fixed_up_front(groups, refittable), kept)
    model.eval()
    original = copy.deepcopy(model)
    graph = build_graph(model)
    norms = _norms_after(model, graph)
    if plan:
        zero_channels(model, graph, plan)
    walk = _Pass(model, criterion, groups, kept, plan, refittable, norms)
    with torch.no_grad():
        current = [model.normalize(x) for x in images]
        reference = [original.normalize(x) for x in images]
        del images
        for unit, ref_unit in zip(units, _units(original.backbone), strict=True):
            _reconstruct_block(walk, unit, ref_unit, current, reference)
    del current, reference, original
    apply_plan(model, plan)
    model.train(was_training)
    if options.finetune_epochs:
        data.fit(model, options.finetune_epochs)
    return StrategyResult.of(groups)
