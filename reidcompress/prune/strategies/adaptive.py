"""Accuracy-controlled pruning: a Pruning Rate Controller around pruning steps: ``afp`` (and ``play_and_prune``).

Singh, Verma, Rai & Namboodiri, "Play and Prune: Adaptive Filter Pruning for Deep Model Compression",
IJCAI 2019, as the survey describes it: an Adaptive Filter Pruning (AFP) module removes filters while a
Pruning Rate Controller (PRC) keeps the accuracy within a tolerance of the unpruned model's. Here the
accuracy is the ReID mAP on identities held out from the training split (never the test query/gallery;
``PruneData.split_identities``), and the controller works on the progress ``p`` toward the budget
(``(1 - rate) ** p`` of the channels or ``target ** p`` of the FLOPs kept, as ``--steps`` does):

- each trial prunes a copy of the accepted network from ``p`` to ``p + delta`` (a pruning step), trains
  it one epoch on the other identities and measures the held-out mAP;
- within ``--accuracy-tolerance`` points of the unpruned mAP the step is accepted and the PRC raises the
  rate (``delta`` doubles); otherwise the step is discarded and it backs off (``delta`` halves);
- ``--epochs`` bounds the trials. The budget is a hard endpoint, not a wish: the last trial goes to the
  full ``--rate``/``--target-flops`` and is kept whatever its accuracy, so the result always lands on
  it. What the accuracy constraint decides is the path there: how fast the rate rises and how much
  recovery training the network gets on the way. Every trial is recorded (``controller`` in the record).

``afp``'s step is a one-shot removal by the criterion (filter L1 norm, the paper's) at ``--scope``;
``play_and_prune`` plugs its regularised step into the same controller (``strategies.play_and_prune``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from reidcompress.models._surgery import resize_modules, weight_shapes
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.engine import ScoredGroup
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.iterative import step_target
from reidcompress.prune.strategies.oneshot import prune_step
from reidcompress.prune.training import PruneData, heldout_map

__all__ = ["Step", "run_controlled", "run_afp", "INITIAL_STEP"]

INITIAL_STEP = 0.25
# (candidate, criterion, options, training data, step_target kwargs, regularisation strength in [0, 1])
Step = Callable[[ReIDNet, Criterion, PruneOptions, PruneData, dict[str, Any], float], list[ScoredGroup]]


def _adopt(model: ReIDNet, candidate: ReIDNet) -> None:
    """Make ``model`` (the caller's object) the accepted candidate: same widths, same weights."""
    state = candidate.state_dict()
    resize_modules(model, weight_shapes(state))
    if candidate.classifier is not None and (
        model.classifier is None or model.classifier.out_features != candidate.classifier.out_features
    ):
        model.reset_classifier(candidate.classifier.out_features)
    model.load_state_dict(state, strict=True)


def _hard_step(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, train: PruneData, target: dict[str, Any], _: float
) -> list[ScoredGroup]:
    groups = prune_step(model, criterion, options, train, **target)
    train.fit(model, 1)
    return groups


def _strength(last: float, floor: float, tolerance: float) -> float:
    """The PRC's regularisation strength: the share of the tolerance the last accepted step left unspent."""
    if tolerance <= 0:
        return 1.0 if last >= floor else 0.0
    return min(1.0, max(0.0, (last - floor) / tolerance))


def run_controlled(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None, step: Step
) -> list[ScoredGroup]:
    """Reach the budget through controller-paced ``step`` trials (see the module doc); prunes ``model`` in place."""
    assert data is not None  # PruneOptions.check guarantees it
    train, val = data.split_identities(options.holdout)
    flops0 = count_flops(model, model.config.input_size)
    reference = last = heldout_map(model, val, data.device)
    floor = reference - options.accuracy_tolerance
    progress, delta = 0.0, INITIAL_STEP
    first: list[ScoredGroup] = []
    base: dict[str, int] | None = None
    trials: list[dict[str, Any]] = []
    for trial in range(options.epochs):
        final = trial == options.epochs - 1
        goal = 1.0 if final else min(1.0, progress + delta)
        strength = _strength(last, floor, options.accuracy_tolerance)
        candidate = copy.deepcopy(model)
        groups = step(candidate, criterion, options, train, step_target(options, goal, flops0, base), strength)
        acc = heldout_map(candidate, val, data.device)
        accepted = acc >= floor or final
        ratio = count_flops(candidate, model.config.input_size) / flops0
        trials.append({"progress": round(goal, 6), "flops_ratio": ratio, "heldout_mAP": acc, "accepted": accepted})
        if not accepted:
            delta /= 2
            continue
        _adopt(model, candidate)
        first, base = first or groups, base or {g.root: g.size for g in groups}
        progress, delta, last = goal, delta * 2, acc
        if progress >= 1.0:
            break
    model.meta["controller"] = {"heldout_mAP_before": reference, "floor": floor, "trials": trials}
    if options.finetune_epochs:
        data.fit(model, options.finetune_epochs)
    return first


def run_afp(model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None) -> list[ScoredGroup]:
    return run_controlled(model, criterion, options, data, _hard_step)
