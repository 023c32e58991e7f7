"""The options of a pruning run, validated in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reidcompress.errors import InputError, MethodError
from reidcompress.prune.planning import SCOPES
from reidcompress.prune.registry import MethodSpec
from reidcompress.prune.sensitivity.profile import SensitivityProfile

__all__ = ["PruneOptions", "AMOUNT_FIELDS", "RECIPE_FIELDS", "with_recipe", "resolve_options"]

# Ways to say how much to prune; a run gives exactly one (``--target-latency`` is the CLI's third).
AMOUNT_FIELDS = ("rate", "target_flops", "target_latency")
# What a recipe's ``prune`` section may set: the choices that describe a model's pruned shape.
RECIPE_FIELDS = ("method", "rate", "target_flops", "scope", "round_to", "residual")


@dataclass(frozen=True)
class PruneOptions:
    """How much to prune and how.

    Attributes:
        rate: fraction of the channels removed in each prunable group, in [0, 1).
        target_flops: fraction of the original FLOPs to keep, in (0, 1]; exclusive with ``rate``.
        scope: ``local`` (the same rate in every group) or ``global`` (one ranking across groups).
        round_to: kept channel counts are multiples of this (8 suits GPUs and TensorRT).
        residual: also prune the residual-stream channels (coupled across a stage's blocks).
        steps: one-shot criteria: reach the target in this many increments.
        finetune_epochs: fine-tuning epochs after each pruning step (and after training-time methods).
        epochs: training epochs of the training-time methods (``afp``/``play_and_prune``: the most
            controller steps, one epoch each).
        calib_batches: calibration batches for data-driven criteria.
        decay: ``progressive`` strategy: how fast the rate approaches the target (exponential schedule).
        weak_scale: ``regularised`` strategy: the magnitude the weak channels are driven to by the end
            of the regularised epochs, as a fraction of where they started.
        tolerance: relative FLOPs tolerance of ``target_flops``.
        holdout: accuracy-controlled methods: fraction of the training identities held out to measure
            ReID accuracy on (at least 4 identities).
        accuracy_tolerance: accuracy-controlled methods: the held-out mAP (percentage points) a pruning
            step may lose against the unpruned network and still be accepted.
        sensitivity: per-layer rates from a sensitivity analysis instead of one rate for all groups
            (one-shot methods, with a FLOPs target; a latency target searches FLOPs targets).
    """

    rate: float | None = None
    target_flops: float | None = None
    scope: str = "local"
    round_to: int = 8
    residual: bool = False
    steps: int = 1
    finetune_epochs: int = 0
    epochs: int = 0
    calib_batches: int = 8
    decay: float = 5.5
    weak_scale: float = 0.01
    tolerance: float = 0.02
    holdout: float = 0.2
    accuracy_tolerance: float = 2.0
    sensitivity: SensitivityProfile | None = None

    def check(self, spec: MethodSpec, has_data: bool) -> None:
        """Raise InputError/MethodError for anything the method cannot run with."""
        if (self.rate is None) == (self.target_flops is None):
            raise InputError("give exactly one of `rate` or `target_flops`")
        if self.rate is not None and not 0.0 <= self.rate < 1.0:
            raise InputError(f"`rate` must be in [0, 1), got {self.rate}")
        if self.target_flops is not None and not 0.0 < self.target_flops <= 1.0:
            raise InputError(f"`target_flops` must be in (0, 1], got {self.target_flops}")
        if self.scope not in SCOPES:
            raise InputError(f"`scope` must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        for name in ("round_to", "steps", "calib_batches"):
            if getattr(self, name) < 1:
                raise InputError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.weak_scale < 1.0:
            raise InputError(f"`weak_scale` must be in (0, 1), got {self.weak_scale}")
        if not 0.0 < self.holdout < 1.0:
            raise InputError(f"`holdout` must be in (0, 1), got {self.holdout}")
        if self.accuracy_tolerance < 0:
            raise InputError(f"`accuracy_tolerance` cannot be negative, got {self.accuracy_tolerance}")
        if self.decay <= 0:
            raise InputError(f"`decay` must be positive, got {self.decay}")
        if self.finetune_epochs < 0 or self.epochs < 0:
            raise InputError("`epochs` and `finetune_epochs` cannot be negative")
        if self.steps > 1 and spec.strategy != "oneshot":
            raise MethodError(f"`steps` applies to one-shot methods; {spec.name} is {spec.strategy}")
        if spec.needs_training and self.epochs < 1:
            raise MethodError(f"{spec.name} prunes while training: give `epochs` (and `data`)")
        if self.sensitivity is not None:
            self._check_sensitivity(spec)
        if not has_data and (spec.needs_data or spec.needs_training or self.finetune_epochs > 0):
            why = "calibration images" if not spec.needs_training and not self.finetune_epochs else "training images"
            raise MethodError(f"{spec.name} needs {why}: give `data`")

    def _check_sensitivity(self, spec: MethodSpec) -> None:
        assert self.sensitivity is not None
        if self.target_flops is None:
            raise InputError("`sensitivity` gives per-layer rates for a target: use `target_flops` or `target_latency`")
        if spec.strategy != "oneshot":
            raise MethodError(f"`sensitivity` applies to one-shot pruning; {spec.name} is {spec.strategy}")
        if self.steps > 1:
            raise InputError("`sensitivity` plans one step from the unpruned network's analysis: drop `steps`")
        if self.scope != "local":
            raise InputError(
                "`sensitivity` sets every group's rate itself: it cannot be combined with the global `scope`"
            )
        if self.sensitivity.residual != self.residual:
            said = "with" if self.sensitivity.residual else "without"
            raise InputError(f"{self.sensitivity.path} was analysed {said} `residual` groups: prune {said} them too")


def with_recipe(recipe: str | os.PathLike[str], given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method and PruneOptions fields a recipe's ``prune`` section sets, under the ``given`` ones.

    ``given`` holds what the user set (None = not set): ``method`` and PruneOptions fields, plus
    ``target_latency``. Any amount given (rate, FLOPs or latency target) replaces the recipe's amount
    as a whole, so a recipe's ``target_flops`` never clashes with a ``--rate``. Also returns the
    recipe's ``finetune`` section as the training options of training-time methods and fine-tuning.
    """
    from reidcompress.models.recipes import load_recipe
    from reidcompress.prune.training import training_options

    rec = load_recipe(recipe)
    unknown = sorted(set(rec.prune) - set(RECIPE_FIELDS))
    if unknown:
        raise InputError(f"{rec.path}: the prune section sets {', '.join(RECIPE_FIELDS)}; unknown: {unknown}")
    from_recipe = dict(rec.prune)
    if any(given.get(k) is not None for k in AMOUNT_FIELDS):
        for k in AMOUNT_FIELDS:
            from_recipe.pop(k, None)
    merged = {**from_recipe, **{k: v for k, v in given.items() if v is not None}}
    return merged, training_options(rec.finetune)


def resolve_options(
    given: Mapping[str, Any],
    *,
    recipe: str | os.PathLike[str] | None = None,
    sensitivity: str | os.PathLike[str] | None = None,
    latency: bool = False,
) -> tuple[str, PruneOptions, dict[str, Any] | None]:
    """The method, PruneOptions and training options of a run described as loose settings.

    Args:
        given: ``method`` and PruneOptions fields as a user set them (None = not set).
        recipe: fills what ``given`` leaves unset (``with_recipe``); ``latency`` counts as an amount given.
        sensitivity: a saved sensitivity analysis, for per-layer rates.

    Returns:
        (method, options, the recipe's training options or None).
    """
    chosen = {**given, "target_latency": 1.0 if latency else None}
    train_options = None
    if recipe is not None:
        chosen, train_options = with_recipe(recipe, chosen)
    method = chosen.pop("method", None)
    if method is None:
        raise InputError("give `method` (see `reidcompress methods`) or a `recipe` whose prune section names one")
    chosen.pop("target_latency", None)
    profile = SensitivityProfile.load(sensitivity) if sensitivity is not None else None
    options = PruneOptions(**{k: v for k, v in chosen.items() if v is not None}, sensitivity=profile)
    return method, options, train_options
