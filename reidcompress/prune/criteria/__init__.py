"""Pruning criteria: one file per criterion, each scoring a dependency group's channels."""

from reidcompress.prune.criteria._base import Criterion
from reidcompress.prune.criteria.channel_pruning import ChannelPruning
from reidcompress.prune.criteria.entropy import ActivationEntropy
from reidcompress.prune.criteria.fpgm import GeometricMedian
from reidcompress.prune.criteria.l1 import L1Norm
from reidcompress.prune.criteria.l2 import L2Norm
from reidcompress.prune.criteria.redundancy import FilterRedundancy
from reidcompress.prune.criteria.taylor import TaylorActivation
from reidcompress.prune.criteria.thinet import ThiNet

__all__ = [
    "Criterion",
    "L1Norm",
    "L2Norm",
    "GeometricMedian",
    "TaylorActivation",
    "ActivationEntropy",
    "ThiNet",
    "ChannelPruning",
    "FilterRedundancy",
]
