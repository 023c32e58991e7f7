"""Pruning methods: a plain dict of MethodSpec, one entry per method the survey names (and FPGM).

A method pairs a criterion (which channels matter least) with a strategy (when and how they go). A new
method registers the same way: a criterion file under ``criteria/``, a strategy under ``strategies/`` if
a new one is needed, and a ``@register_method(name, ...)`` factory that builds the criterion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reidcompress.errors import MethodError
from reidcompress.prune.criteria import (
    ActivationEntropy,
    ChannelPruning,
    Criterion,
    FilterRedundancy,
    GeometricMedian,
    L1Norm,
    L2Norm,
    TaylorActivation,
    ThiNet,
)
from reidcompress.prune.training import calibration_loss

__all__ = ["MethodSpec", "STRATEGY_NAMES", "register_method", "get_method", "list_methods"]

STRATEGY_NAMES = (
    "oneshot",
    "soft",
    "progressive",
    "regularised",
    "reconstruction",
    "adaptive",
    "adaptive_regularised",
)


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
            ``regularised`` (a training-time penalty drives the selected filters to zero, then remove),
            ``reconstruction`` (select layer by layer on calibration images by the next layer's
            reconstruction error, refit the next layer by least squares, then remove), ``adaptive``
            (pruning steps paced by a controller on held-out ReID accuracy, training between them),
            ``adaptive_regularised`` (the same controller, each step a regularised training epoch
            that lets the loss decide which layers give up filters).
        needs_data: scoring needs calibration images.
        needs_training: the method prunes while training (``--epochs``).
        make_criterion: builds a fresh criterion object (the decorated factory).
    """

    name: str
    paper: str
    criterion: str
    strategy: str
    needs_data: bool
    needs_training: bool
    make_criterion: Callable[[], Criterion]


_METHODS: dict[str, MethodSpec] = {}

Factory = Callable[[], Criterion]


def register_method(
    name: str, *, paper: str, criterion: str, strategy: str, needs_data: bool = False, needs_training: bool = False
) -> Callable[[Factory], Factory]:
    """Decorator registering a criterion factory as pruning method ``name``; raises on duplicates."""

    def deco(factory: Factory) -> Factory:
        if name in _METHODS:
            raise ValueError(f"pruning method {name!r} is already registered")
        if strategy not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGY_NAMES}")
        _METHODS[name] = MethodSpec(name, paper, criterion, strategy, needs_data, needs_training, factory)
        return factory

    return deco


def list_methods() -> list[str]:
    return list(_METHODS)


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise MethodError(f"unknown pruning method {name!r}; choose one of {', '.join(list_methods())}")
    return _METHODS[name]


@register_method(
    "hao_li",
    paper='Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017',
    criterion="L1 norm of each filter",
    strategy="oneshot",
)
def _hao_li() -> Criterion:
    return L1Norm()


@register_method(
    "molchanov",
    paper='Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017',
    criterion="first-order Taylor expansion: |spatial mean of activation x gradient| of the triplet loss, "
    "L2-normalised per layer",
    strategy="oneshot",
    needs_data=True,
)
def _molchanov() -> Criterion:
    return TaylorActivation(calibration_loss)


@register_method(
    "entropy",
    paper='Luo & Wu, "An Entropy-based Pruning Method for CNN Compression", 2017',
    criterion="entropy of each channel's global-average-pooled activation over calibration images",
    strategy="oneshot",
    needs_data=True,
)
def _entropy() -> Criterion:
    return ActivationEntropy()


_FPGM_PAPER = (
    'He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks Acceleration", CVPR 2019'
)


@register_method(
    "fpgm",
    paper=_FPGM_PAPER,
    criterion="sum of euclidean distances to the layer's other filters (those nearest the geometric median go)",
    strategy="oneshot",
)
def _fpgm() -> Criterion:
    return GeometricMedian()


@register_method(
    "fpgm_soft",
    paper=_FPGM_PAPER + " (the survey's Algorithm 2)",
    criterion="FPGM distance sums, re-selected and zeroed after every training epoch",
    strategy="soft",
    needs_data=True,
    needs_training=True,
)
def _fpgm_soft() -> Criterion:
    return GeometricMedian()


@register_method(
    "auto_balanced",
    paper='Ding et al., "Auto-Balanced Filter Pruning for Efficient Convolutional Neural Networks", AAAI 2018',
    criterion="L2 norm of each filter; a zero-sum L2 penalty shrinks the weakest filters and grows the rest",
    strategy="regularised",
    needs_data=True,
    needs_training=True,
)
def _auto_balanced() -> Criterion:
    return L2Norm()


@register_method(
    "psfp",
    paper='He et al., "Progressive Deep Neural Networks Acceleration via Soft Filter Pruning", 2018',
    criterion="L2 norm of each filter, zeroed after every epoch at an exponentially growing rate "
    "(the survey's Algorithm 1)",
    strategy="progressive",
    needs_data=True,
    needs_training=True,
)
def _psfp() -> Criterion:
    return L2Norm()


@register_method(
    "thinet",
    paper='Luo, Wu & Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression", ICCV 2017',
    criterion="greedy removal of the channels whose loss least increases the next layer's reconstruction error "
    "on calibration activations; least-squares scales of the kept channels",
    strategy="reconstruction",
    needs_data=True,
)
def _thinet() -> Criterion:
    return ThiNet()


@register_method(
    "channel_pruning",
    paper='He, Zhang & Sun, "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017',
    criterion="LASSO regression of the next layer's output on the channels' contributions; least-squares "
    "reconstruction of the next layer's kept weights",
    strategy="reconstruction",
    needs_data=True,
)
def _channel_pruning() -> Criterion:
    return ChannelPruning()


@register_method(
    "redundant_channels",
    paper='Ayinde & Zurada, "Building Efficient ConvNets using Redundant Feature Pruning", arXiv 1802.07653, 2018',
    criterion="agglomerative clustering (average linkage) of each layer's filters by cosine distance; one "
    "filter (the largest) kept per cluster",
    strategy="oneshot",
)
def _redundant_channels() -> Criterion:
    return FilterRedundancy()


_PLAY_AND_PRUNE = (
    'Singh, Verma, Rai & Namboodiri, "Play and Prune: Adaptive Filter Pruning for Deep Model Compression", IJCAI 2019'
)


@register_method(
    "play_and_prune",
    paper=_PLAY_AND_PRUNE,
    criterion="filter L1 norm, ranked globally after an epoch that shrinks the weakest filters with a strength "
    "set by the held-out accuracy margin; a rate controller paces the steps",
    strategy="adaptive_regularised",
    needs_data=True,
    needs_training=True,
)
def _play_and_prune() -> Criterion:
    return L1Norm()


@register_method(
    "afp",
    paper=_PLAY_AND_PRUNE + ": its Adaptive Filter Pruning module and Pruning Rate Controller, as the survey "
    "describes them",
    criterion="filter L1 norm; a Pruning Rate Controller raises the rate while the mAP on held-out training "
    "identities stays within the tolerance and backs off when it does not",
    strategy="adaptive",
    needs_data=True,
    needs_training=True,
)
def _afp() -> Criterion:
    return L1Norm()
