"""The resumable store of a sensitivity analysis: one JSON file per finished measurement."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reidcompress._io import atomic_write_text

__all__ = ["ResultStore"]


class ResultStore:
    """One JSON file per finished measurement, under a folder named by the analysis key."""

    def __init__(self, root: Path, key: str, description: Mapping[str, Any]) -> None:
        self.dir = root / key
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "key.json", json.dumps(description, indent=2, default=str))

    def _path(self, name: str) -> Path:
        return self.dir / f"{name.replace('/', '_')}.json"

    def get(self, name: str) -> dict[str, Any] | None:
        p = self._path(name)
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except (OSError, json.JSONDecodeError):
            return None  # an unreadable entry is measured again

    def put(self, name: str, value: dict[str, Any]) -> dict[str, Any]:
        atomic_write_text(self._path(name), json.dumps(value))
        return value
