"""Resumable stages: a finished stage whose settings and outputs are unchanged is reused."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from reidcompress._io import atomic_write_text

__all__ = ["StageRunner", "settings_key"]


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings a stage depends on: a finished stage is reused only if they match."""
    return hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:16]


class StageRunner:
    """Runs named stages in a work folder and records each one's key, wall time and result."""

    def __init__(self, workdir: Path, console: Console) -> None:
        self.workdir = workdir
        self.console = console
        self.path = workdir / "stages.json"
        self.state: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.resuming = False  # whether the stage being run continues an interrupted run with its settings

    def done(self, name: str, key: str, outputs: Sequence[Path]) -> bool:
        rec = self.state.get(name)
        return bool(rec and rec.get("key") == key and rec.get("finished") and all(p.exists() for p in outputs))

    def run(self, name: str, key: str, outputs: Sequence[Path], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if self.done(name, key, outputs):
            self.console.print(f"[green]✓[/green] {name}: reused ({self.state[name]['seconds']:.0f} s when it ran)")
            return self.state[name]["result"]
        self.console.rule(f"[bold]{name}")
        self.resuming = self.started_with(name, key)
        self.state[name] = {"key": key, "finished": False}
        self._save()
        start = time.perf_counter()
        result = fn()
        self.state[name] = {"key": key, "finished": True, "seconds": time.perf_counter() - start, "result": result}
        self._save()
        return result

    def started_with(self, name: str, key: str) -> bool:
        """Whether an unfinished run of this stage began with the same settings (so it may resume)."""
        rec = self.state.get(name)
        return bool(rec and rec.get("key") == key and not rec.get("finished"))

    def seconds(self) -> dict[str, float]:
        return {k: v.get("seconds", 0.0) for k, v in self.state.items() if v.get("finished")}

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state, indent=2, default=str))
