"""First-order Taylor expansion of the loss on activations: ``molchanov``.

Molchanov, Tyree, Karras, Aila & Kautz, "Pruning Convolutional Neural Networks for Resource Efficient
Inference", ICLR 2017. Removing feature map ``z`` changes the loss by about
``|1/M sum_m dC/dz_m * z_m|`` (M = spatial positions), averaged over calibration examples, then
L2-normalised per layer so that layers can be ranked together. This is the 2017 criterion on
activations; torch-pruning's ``TaylorImportance`` (|weight x grad|) is the 2019 follow-up paper.

The activation hooked is each BatchNorm output. For a block-internal channel that BN feeds a ReLU, and
``a * dC/da`` is the same before and after the ReLU (where a <= 0 both the ReLU output and the gradient
reaching the BN output are 0), so this equals the criterion on the post-ReLU feature map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from reidcompress.errors import MethodError
from reidcompress.prune.criteria._activations import record_bn_outputs
from reidcompress.prune.criteria._base import Criterion, combine_members, norm_out_members

__all__ = ["TaylorActivation", "LossFn"]

LossFn = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, images, pids) -> loss


class TaylorActivation(Criterion):
    """Score = mean over examples of |spatial mean of activation x gradient| per channel.

    Args:
        loss_fn: ``loss_fn(model, images, pids) -> scalar``, the training loss whose change is estimated
            (the ReID triplet loss in ``reidcompress prune``).
    """

    name = "taylor"
    needs_data = True

    def __init__(self, loss_fn: LossFn) -> None:
        self.loss_fn = loss_fn
        self._stats: dict[nn.Module, torch.Tensor] = {}

    def calibrate(self, model: nn.Module, batches: Iterable[Any], *, device: torch.device | str = "cpu") -> None:
        sums: dict[nn.Module, torch.Tensor] = {}
        count = 0
        with record_bn_outputs(model) as acts, torch.enable_grad():
            for batch in batches:
                images, pids = batch[0].to(device), batch[1].to(device)
                acts.clear()
                loss = self.loss_fn(model, images, pids)
                mods = [m for m, a in acts.items() if a.requires_grad]
                grads = torch.autograd.grad(loss, [acts[m] for m in mods], allow_unused=True)
                for m, g in zip(mods, grads, strict=True):
                    if g is None:
                        continue
                    per_example = (acts[m].detach() * g).mean(dim=(2, 3)).abs().sum(0).double().cpu()
                    sums[m] = sums[m] + per_example if m in sums else per_example
                count += images.shape[0]
        if count == 0:
            raise MethodError("molchanov: the calibration data gave no batch")
        self._stats = {m: s / count for m, s in sums.items()}

    def __call__(self, group: tp.Group) -> torch.Tensor:
        members = norm_out_members(group)
        missing = [bn for bn, _, _ in members if bn not in self._stats]
        if not members or missing:
            raise MethodError("molchanov: call calibrate() on the unpruned model before scoring")
        return combine_members([(self._stats[bn][idxs], root) for bn, idxs, root in members], len(group[0].idxs))

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        # The paper's layer-wise L2 normalisation (its section 2.2) before ranking across layers.
        return scores / scores.norm().clamp_min(1e-12)
