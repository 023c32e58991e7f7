"""Accuracy-controlled pruning: a Pruning Rate Controller around pruning steps: ``afp`` (and ``play_and_prune``).

Singh, Verma, Rai & Namboodiri, "Play and Prune: Adaptive Filter Pruning for Deep Model Compression",
IJCAI 2019, as the survey describes it: an Adaptive Filter Pruning (AFP) module removes filters while a
Pruning Rate Controller (PRC) keeps the accuracy within a tolerance of the unpruned model's. Here the
accuracy is the ReID mAP on identities held out from the training split (never the test query/gallery;
``PruneData.split_identities``), and the controller works on the progress ``p`` toward the budget
(``(1 - rate) ** p`` of the channels or ``target ** p`` of the FLOPs kept, as ``--steps`` does):

- each trial prunes a copy of the accepted network from ``p`` to ``p + delta`` (a pruning step), trains
  it one epoch on the other identities and measures the held-out mAP (the ID loss uses the checkpoint's
  classifier rows of those identities when it was trained on them, else only the triplet loss runs:
  a classifier learnt from scratch would disturb one-epoch recoveries);
- within ``--accuracy-tolerance`` points of the reference mAP, that of the unpruned network after the
  same one-epoch recovery (one extra epoch, outside ``--epochs``), the step is accepted and the PRC
  raises the rate (``delta`` doubles); otherwise it is discarded and the PRC backs off (``delta`` halves);
- ``--epochs`` bounds the trials, and the budget is a hard endpoint, not a wish: no step is smaller
  than the pace that still reaches the full ``--rate``/``--target-flops`` with the trials left, and a
  step at that pace is kept whatever its accuracy (``forced`` in its record), so the result always
  lands on the budget. What the accuracy constraint decides is the path: how much faster than that
  pace the rate rises, and so how much recovery training the network gets between steps;
- the schedule is a budget split: ``--epochs`` pruning epochs (the trials), then a final fine-tune
  of the epochs the trials left unused plus ``--finetune-epochs``, on *all* the training identities:
  the held-out ones return to training once no step needs them as a yardstick. The split is recorded
  (``controller.schedule``), with every trial (``controller.trials``), in the strategy's result,
  which the pruning record carries. :func:`split_controlled_budget` splits one total budget this way.

The paper alternates pruning iterations with training until the PRC can prune no more within the
tolerance, and claims no external fine-tuning is needed; it gives no fixed split of epochs to follow
(its runs are open-ended, stopped by the tolerance). That holds with an open-ended number of
iterations; with a fixed budget reached by force (a CPU-sized run, a survey at equal epochs) the last
forced steps are not recovered from, and the synthetic Table 5 lost ~10 rank-1 points to hao_li +
fine-tuning without a final fine-tune (``docs/table5_synthetic.md``). The final fine-tune is this
project's addition for that case.

``afp``'s step is a one-shot removal by the criterion (filter L1 norm, the paper's) at ``--scope``;
``play_and_prune`` plugs its regularised step into the same controller (``strategies.play_and_prune``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from reidcompress.models._surgery import resize_modules, weight_shapes
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import count_flops
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.engine import ScoredGroup
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.iterative import step_target
from reidcompress.prune.strategies.oneshot import prune_step
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData, heldout_map

__all__ = ["Step", "run_controlled", "run_afp", "split_controlled_budget", "INITIAL_STEP", "FINETUNE_SHARE"]

INITIAL_STEP = 0.25
# The share of a fixed total budget kept for the final fine-tune (as auto_balanced's regularised/
# fine-tune split): enough epochs to recover from the last, forced steps.
FINETUNE_SHARE = 1 / 3
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


def _reference_map(model: ReIDNet, train: PruneData, val: Any, device: str) -> float:
    """The held-out mAP the steps are held to: the unpruned network after the same one-epoch recovery.

    A checkpoint may have been trained on the held-out identities; then any epoch on the others lowers
    their mAP, pruned or not, and only the difference the pruning makes should count.
    """
    reference = copy.deepcopy(model)
    train.fit(reference, 1)
    return heldout_map(reference, val, device)


Classifier = tuple[torch.Tensor, torch.Tensor | None]


def _set_classifier(model: ReIDNet, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    model.reset_classifier(weight.shape[0])
    assert model.classifier is not None
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        if bias is not None and model.classifier.bias is not None:
            model.classifier.bias.copy_(bias)


def _recovery_data(model: ReIDNet, data: PruneData, train: PruneData, val: Any) -> tuple[PruneData, Any]:
    """How the trials train: with the ID loss on the checkpoint's own classifier rows of the training
    identities when it was trained on this split (the rows are set on ``model`` now; returns what
    ``_restore_classifier`` needs), else with the triplet loss alone, since a classifier learnt from
    scratch would disturb one-epoch recoveries more than it helps them."""
    if model.classifier is None or model.classifier.out_features != data.num_pids:
        return dataclasses.replace(train, train_options={**(train.train_options or {}), "id_weight": 0.0}), None
    held = {it.pid for it in val.query}
    rows = torch.tensor([p for p in range(data.num_pids) if p not in held])
    full: Classifier = (model.classifier.weight.detach().clone(), _clone(model.classifier.bias))
    _set_classifier(model, full[0][rows], None if full[1] is None else full[1][rows])
    return train, (full, rows)


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def _restore_classifier(model: ReIDNet, saved: Any) -> None:
    """Put the trained rows back into the full classifier, so that it covers every training identity."""
    if saved is None or model.classifier is None:
        return
    (weight, bias), rows = saved
    weight[rows] = model.classifier.weight.detach().to(weight)
    if bias is not None and model.classifier.bias is not None:
        bias[rows] = model.classifier.bias.detach().to(bias)
    _set_classifier(model, weight, bias)


def _strength(last: float, floor: float, tolerance: float) -> float:
    """The PRC's regularisation strength: the share of the tolerance the last accepted step left unspent."""
    if tolerance <= 0:
        return 1.0 if last >= floor else 0.0
    return min(1.0, max(0.0, (last - floor) / tolerance))


def run_controlled(
    model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None, step: Step
) -> StrategyResult:
    """Reach the budget through controller-paced ``step`` trials (see the module doc); prunes ``model`` in place."""
    assert data is not None  # PruneOptions.check guarantees it
    train, val = data.split_identities(options.holdout)
    train, saved = _recovery_data(model, data, train, val)
    flops0 = count_flops(model, model.config.input_size)
    reference = last = _reference_map(model, train, val, data.device)
    floor = reference - options.accuracy_tolerance
    progress, delta = 0.0, INITIAL_STEP
    first: list[ScoredGroup] = []
    base: dict[str, int] | None = None
    trials: list[dict[str, Any]] = []
    for trial in range(options.epochs):
        # The slowest pace that still reaches the budget with the trials left: the PRC goes no slower.
        pace = (1.0 - progress) / (options.epochs - trial)
        goal = min(1.0, progress + max(delta, pace))
        strength = _strength(last, floor, options.accuracy_tolerance)
        candidate = copy.deepcopy(model)
        groups = step(candidate, criterion, options, train, step_target(options, goal, flops0, base), strength)
        acc = heldout_map(candidate, val, data.device)
        within = acc >= floor
        forced = not within and goal - progress <= pace + 1e-9
        ratio = count_flops(candidate, model.config.input_size) / flops0
        trials.append({"progress": round(goal, 6), "flops_ratio": ratio, "heldout_mAP": acc,
                       "accepted": within or forced, "forced": forced})  # fmt: skip
        delta = delta * 2 if within else delta / 2
        if not (within or forced):
            continue
        _adopt(model, candidate)
        first, base = first or groups, base or {g.root: g.size for g in groups}
        progress, last = goal, acc
        if progress >= 1.0:
            break
    _restore_classifier(model, saved)
    # The final fine-tune: trials the steps did not use, then --finetune-epochs, on every identity.
    tail = options.epochs - len(trials) + options.finetune_epochs
    if tail:
        data.fit(model, tail)
    schedule = {
        "pruning_epochs": options.epochs,
        "trials_run": len(trials),
        "finetune_epochs": tail,
        "finetune_identities": data.num_pids,
        "heldout_identities_returned": data.num_pids - train.num_pids,
    }
    controller = {"heldout_mAP_before": reference, "floor": floor, "schedule": schedule, "trials": trials}
    return StrategyResult.of(first, controller=controller)


def split_controlled_budget(epochs: int) -> tuple[int, int]:
    """A total budget of ``epochs`` as (``--epochs`` pruning trials, ``--finetune-epochs`` after them)."""
    tail = int(epochs * FINETUNE_SHARE) if epochs > 1 else 0
    return epochs - tail, tail


def run_afp(model: ReIDNet, criterion: Criterion, options: PruneOptions, data: PruneData | None) -> StrategyResult:
    return run_controlled(model, criterion, options, data, _hard_step)
