"""What the demo runs: sizes, architecture, pruning and training lengths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidcompress.demo.stages import settings_key
from reidcompress.errors import InputError

__all__ = ["DemoConfig"]


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings. The default finishes in about 3 minutes on 2 CPU cores.

    ``quick`` is the smoke-test size used by the tests (tiny network, 64x32, a few epochs).
    """

    workdir: Path = Path("reidcompress-demo")
    arch: str = "small"
    input_size: tuple[int, int] = (128, 64)
    method: str = "hao_li"
    target_flops: float = 0.5
    ids: int = 150
    cams: int = 6
    images_per_id: int = 16
    source_epochs: int = 30
    target_epochs: int = 15
    pruned_epochs: int = 15
    distill: bool = True
    # A new ID classifier for the pruned model's fine-tuning, as `reidcompress finetune` gives it: the
    # unpruned model's classifier held rank-1 3-4 points lower here (83.3/84.0 vs 87.4/87.1, seeds 0/1).
    pruned_new_classifier: bool = True
    lr: float = 1e-3
    max_rank1_drop: float = 3.0
    latency_batch: int = 16
    latency_runs: int = 20
    threads: int | None = None
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.target_flops <= 1:
            raise InputError(f"`target_flops` must be in (0, 1], got {self.target_flops}")
        if min(self.source_epochs, self.target_epochs, self.pruned_epochs) < 1:
            raise InputError("every training stage needs at least 1 epoch")

    @classmethod
    def quick_config(cls, **overrides: Any) -> DemoConfig:
        small = dict(
            arch="tiny",
            input_size=(64, 32),
            ids=24,
            cams=3,
            images_per_id=8,
            source_epochs=3,
            target_epochs=2,
            pruned_epochs=2,
            latency_batch=4,
            latency_runs=3,
            max_rank1_drop=100.0,
            quick=True,
        )
        return cls(**{**small, **overrides})

    @property
    def round_to(self) -> int:
        # The tiny network's 16-channel layers would not halve in multiples of 8.
        return 4 if self.arch == "tiny" else 8

    def stage_key(self, *fields: str) -> str:
        """A hash of the settings a stage depends on: a finished stage is reused only if they match."""
        d = dataclasses.asdict(self)
        return settings_key({f: d[f] for f in fields})
