"""A rich progress bar for one epoch (loss, lr, throughput), shown on rank 0 only."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["EpochProgress"]


class EpochProgress:
    """``with EpochProgress(epoch, epochs, total, enabled) as bar: bar.update(loss, lr, images)``."""

    def __init__(self, epoch: int, epochs: int, total: int, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.total = total
        self._images = 0
        self._start = time.perf_counter()
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn(f"epoch {epoch + 1}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
            )
            self._task = self._progress.add_task("train", total=total, stats="")

    def __enter__(self) -> EpochProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def images_per_s(self) -> float:
        return self._images / max(time.perf_counter() - self._start, 1e-9)

    def update(self, loss: float, lr: float, images: int) -> None:
        """One more batch: the epoch's running mean loss, the lr, the batch's images (all ranks)."""
        self._images += images
        if self._progress is None:
            return
        stats = f"loss {loss:.3f}  lr {lr:.2e}  {self.images_per_s:.0f} img/s"
        self._progress.update(self._task, advance=1, stats=stats)
