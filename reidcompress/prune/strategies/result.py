"""What a pruning strategy returns: the groups it pruned and any record of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reidcompress.prune.engine import ScoredGroup

__all__ = ["StrategyResult"]


@dataclass(frozen=True)
class StrategyResult:
    """The outcome of one strategy run on a model it pruned in place.

    Attributes:
        groups: the prunable groups as first scored (their ``size`` is the unpruned width).
        record: JSON-able entries the strategy adds to the pruning record (``controller`` for the
            accuracy-controlled methods); empty for most.
    """

    groups: tuple[ScoredGroup, ...]
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, groups: Sequence[ScoredGroup], **record: Any) -> StrategyResult:
        return cls(tuple(groups), record)
