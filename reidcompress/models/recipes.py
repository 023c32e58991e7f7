"""Training recipes: JSON files in the repository's ``models/`` folder (or any path).

A recipe names a baseline's model settings (architecture, input size, last stride, pooling) and the
options of its ``train``, ``finetune`` and ``prune`` runs. Commands take ``--recipe NAME`` or
``--recipe FILE``; options given on the command line win over the recipe's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidcompress.errors import InputError

__all__ = ["Recipe", "load_recipe", "list_recipes", "recipe_dirs"]

SECTIONS = ("model", "train", "finetune", "prune")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: $REIDCOMPRESS_MODELS, then the checkout's ``models/``."""
    dirs = [Path(p) for p in os.environ.get("REIDCOMPRESS_MODELS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    return [d for d in dirs if d.is_dir()]


def list_recipes() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() for p in d.glob("*.json")})


def _find(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in recipe_dirs():
        if (d / f"{p.name}.json").is_file():
            return d / f"{p.name}.json"
    known = ", ".join(list_recipes()) or "none (set REIDCOMPRESS_MODELS to the folder holding the recipe files)"
    raise InputError(f"recipe {str(name_or_path)!r} not found; known recipes: {known}")


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    path = _find(name_or_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON recipe ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a JSON object")
    unknown = set(data) - {*SECTIONS, "name", "description", "reference"}
    if unknown:
        raise InputError(f"{path}: unknown recipe keys {sorted(unknown)}; expected {', '.join(SECTIONS)}")
    sections = {s: dict(data.get(s) or {}) for s in SECTIONS}
    return Recipe(
        name=data.get("name", path.stem),
        path=path,
        description=data.get("description", ""),
        reference=dict(data.get("reference") or {}),
        **sections,
    )
