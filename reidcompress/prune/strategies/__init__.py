"""Pruning strategies: when and how the channels a criterion ranks lowest are removed."""

from collections.abc import Callable

from reidcompress.models.reid import ReIDNet
from reidcompress.prune.criteria import Criterion
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.strategies.adaptive import run_afp
from reidcompress.prune.strategies.iterative import run_steps
from reidcompress.prune.strategies.play_and_prune import run_play_and_prune
from reidcompress.prune.strategies.reconstruction import run_reconstruction
from reidcompress.prune.strategies.regularised import run_regularised
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.strategies.soft import run_progressive, run_soft
from reidcompress.prune.training import PruneData

__all__ = ["STRATEGIES", "Strategy", "StrategyResult"]

Strategy = Callable[[ReIDNet, Criterion, PruneOptions, "PruneData | None"], StrategyResult]

# Keyed by MethodSpec.strategy. Each prunes the model in place and returns its groups as first scored
# (and any record of its own).
STRATEGIES: dict[str, Strategy] = {
    "oneshot": run_steps,
    "soft": run_soft,
    "progressive": run_progressive,
    "regularised": run_regularised,
    "reconstruction": run_reconstruction,
    "adaptive": run_afp,
    "adaptive_regularised": run_play_and_prune,
}
