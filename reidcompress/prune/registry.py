"""Pruning methods: a plain dict of MethodSpec, one entry per method of the survey's Table 5 (and FPGM).

A method pairs a criterion (which channels matter least) with a strategy (when and how they go). More
methods (ThiNet, Channel Pruning, Redundant Channels, Play-and-Prune, AFP...) register the same way:
a criterion file under ``criteria/``, a strategy under ``strategies/`` if a new one is needed, and a
``register_method(MethodSpec(...))`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reidcompress.errors import MethodError
from reidcompress.prune.criteria import (
    ActivationEntropy,
    Criterion,
    GeometricMedian,
    L1Norm,
    L2Norm,
    TaylorActivation,
)
from reidcompress.prune.training import calibration_loss

__all__ = ["MethodSpec", "STRATEGY_NAMES", "register_method", "get_method", "list_methods"]

STRATEGY_NAMES = ("oneshot", "soft", "progressive", "regularised")


@dataclass(frozen=True)
class MethodSpec:
    """A pruning method.

    Attributes:
        name: CLI name (``--method``).
        paper: the publication it implements.
        criterion: what the criterion measures, for people.
        strategy: one of STRATEGY_NAMES: ``oneshot`` (score once, remove; ``--steps`` makes it
            iterative), ``soft`` (zero the selected filters after every training epoch at the final
            rate, remove at the end), ``progressive`` (soft, with a rate growing toward the target),
            ``regularised`` (a training-time penalty drives the selected filters to zero, then remove).
        needs_data: scoring needs calibration images.
        needs_training: the method prunes while training (``--epochs``).
        make_criterion: builds a fresh criterion object.
    """

    name: str
    paper: str
    criterion: str
    strategy: str
    needs_data: bool
    needs_training: bool
    make_criterion: Callable[[], Criterion]


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    if spec.name in _METHODS:
        raise ValueError(f"pruning method {spec.name!r} is already registered")
    if spec.strategy not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {spec.strategy!r}; choose one of {STRATEGY_NAMES}")
    _METHODS[spec.name] = spec
    return spec


def list_methods() -> list[str]:
    return list(_METHODS)


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise MethodError(f"unknown pruning method {name!r}; choose one of {', '.join(list_methods())}")
    return _METHODS[name]


register_method(MethodSpec(
    "hao_li", 'Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017',
    "L1 norm of each filter", "oneshot", needs_data=False, needs_training=False, make_criterion=L1Norm,
))
register_method(MethodSpec(
    "molchanov",
    'Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017',
    "first-order Taylor expansion: |spatial mean of activation x gradient| of the triplet loss, "
    "L2-normalised per layer",
    "oneshot", needs_data=True, needs_training=False,
    make_criterion=lambda: TaylorActivation(calibration_loss),
))
register_method(MethodSpec(
    "entropy", 'Luo & Wu, "An Entropy-based Pruning Method for CNN Compression", 2017',
    "entropy of each channel's global-average-pooled activation over calibration images",
    "oneshot", needs_data=True, needs_training=False, make_criterion=ActivationEntropy,
))
register_method(MethodSpec(
    "fpgm",
    'He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks Acceleration", CVPR 2019',
    "sum of euclidean distances to the layer's other filters (nearest the geometric median go)",
    "oneshot", needs_data=False, needs_training=False, make_criterion=GeometricMedian,
))
register_method(MethodSpec(
    "fpgm_soft",
    'He et al., "Filter Pruning via Geometric Median ...", CVPR 2019 (the survey\'s Algorithm 2)',
    "sum of euclidean distances to the layer's other filters, re-selected every epoch",
    "soft", needs_data=True, needs_training=True, make_criterion=GeometricMedian,
))
register_method(MethodSpec(
    "auto_balanced",
    'Ding et al., "Auto-Balanced Filter Pruning for Efficient Convolutional Neural Networks", AAAI 2018',
    "L2 norm of each filter; a zero-sum L2 penalty shrinks the weakest filters and grows the rest",
    "regularised", needs_data=True, needs_training=True, make_criterion=L2Norm,
))
register_method(MethodSpec(
    "psfp",
    'He et al., "Progressive Deep Neural Networks Acceleration via Soft Filter Pruning", 2018',
    "L2 norm of each filter, zeroed every epoch at an exponentially growing rate (the survey's Algorithm 1)",
    "progressive", needs_data=True, needs_training=True, make_criterion=L2Norm,
))
