"""A saved sensitivity analysis read back as per-group accuracy costs, for ``prune --sensitivity``.

The measured drops become a cost per group that ``planning.kept_for_costs`` trades against FLOPs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reidcompress._io import require_file
from reidcompress.errors import InputError, MethodError
from reidcompress.prune.engine import ScoredGroup

__all__ = ["FORMAT", "METRICS", "SensitivityProfile"]

FORMAT = "reidcompress.sensitivity"
METRICS = ("rank1", "mAP")


@dataclass(frozen=True)
class SensitivityProfile:
    """A saved analysis as accuracy costs: per group, the points lost when ``rate`` of it is removed.

    The measured drops are made non-decreasing in the rate (a running maximum, floored at zero: a
    small gain from pruning is noise, not a reason to prune more) and interpolated linearly from 0 at
    rate 0. Rates beyond the largest analysed one are not extrapolated.
    """

    path: str
    method: str
    checkpoint_sha256: str
    residual: bool
    metric: str
    curves: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]  # root -> (rates, costs)
    sizes: Mapping[str, int]

    @classmethod
    def load(cls, path: str | os.PathLike[str], metric: str = "rank1") -> SensitivityProfile:
        if metric not in METRICS:
            raise InputError(f"the sensitivity metric must be one of {', '.join(METRICS)}, got {metric!r}")
        p = require_file(path, "sensitivity file")
        try:
            data = json.loads(p.read_text())
            if data.get("format") != FORMAT:
                raise ValueError("not written by `reidcompress sensitivity` as JSON or a report")
            curves, sizes = {}, {}
            for layer in data["layers"]:
                pts = sorted((float(q["rate"]), float(q[f"{metric}_drop"])) for q in layer["points"])
                costs = np.maximum.accumulate(np.maximum([0.0] + [c for _, c in pts], 0.0))
                curves[layer["root"]] = ((0.0, *(r for r, _ in pts)), tuple(float(c) for c in costs))
                sizes[layer["root"]] = int(layer["channels"])
            return cls(str(p), data["method"], data["checkpoint_sha256"], bool(data["residual"]), metric, curves, sizes)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{p}: not a sensitivity analysis ({e})") from None

    def cost(self, root: str, rate: float) -> float:
        rates, costs = self.curves[root]
        return float(np.interp(rate, rates, costs))

    def min_kept(self, groups: Sequence[ScoredGroup], round_to: int) -> dict[str, int]:
        """The fewest channels each group may keep: its largest analysed rate, rounded up to ``round_to``."""
        self.check_groups(groups)
        out = {}
        for g in groups:
            floor = g.size * (1.0 - self.curves[g.root][0][-1])
            out[g.root] = min(g.size, max(round_to, math.ceil(floor / round_to - 1e-9) * round_to))
        return out

    def check_groups(self, groups: Sequence[ScoredGroup]) -> None:
        """The analysis must cover exactly these groups, at these widths."""
        have = {g.root: g.size for g in groups}
        if have != dict(self.sizes):
            missing = sorted(set(have) - set(self.sizes))
            extra = sorted(set(self.sizes) - set(have))
            widths = sorted(r for r in set(have) & set(self.sizes) if have[r] != self.sizes[r])
            raise MethodError(
                f"{self.path} does not describe this network's prunable groups (analysed "
                f"{'with' if self.residual else 'without'} `residual` groups; not analysed: {missing or 'none'}; "
                f"unknown here: {extra or 'none'}; other widths: {widths or 'none'})"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "method": self.method,
            "checkpoint_sha256": self.checkpoint_sha256,
            "metric": self.metric,
            "max_rate": max(r[-1] for r, _ in self.curves.values()),
        }
