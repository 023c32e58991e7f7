"""The resumable training state: one plain-typed file written atomically every epoch.

Everything is stored as tensors, numbers, strings, lists and dicts, so the file loads with
``torch.load(weights_only=True)`` like every other reidcompress checkpoint.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidcompress._io import atomic_path, json_digest
from reidcompress.errors import CheckpointError, InputError
from reidcompress.models.checkpoint import load_raw
from reidcompress.train.config import RESUMABLE_CHANGES, TrainConfig

__all__ = [
    "STATE_FORMAT",
    "capture_rng",
    "restore_rng",
    "save_state",
    "load_state",
    "run_fingerprint",
    "check_resumable",
]

STATE_FORMAT = "reidcompress.train_state"
STATE_VERSION = 1


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's torch, numpy, python (and CUDA) generator states as plain values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": _to_lists(random.getstate()),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_lists(obj: Any) -> Any:
    return [_to_lists(v) for v in obj] if isinstance(obj, (tuple, list)) else obj


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, tmp)
    return path


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"nothing to resume: no training state at {p}")
    state = load_raw(p)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{p}: not a reidcompress training state")
    if state.get("version", 0) > STATE_VERSION:
        raise CheckpointError(f"{p}: training state version {state['version']} is newer than this reidcompress")
    return state


def run_fingerprint(config: dict[str, Any], items: Sequence[Any]) -> dict[str, str]:
    """What the finished epochs depend on beyond the options: the architecture and the training images.

    (Not the starting weights: a resumed run continues from the weights in its state.)
    """
    return {
        "architecture": json_digest(config),
        "data": json_digest([(str(i.path), int(i.pid), int(i.camid)) for i in items]),
    }


_FINGERPRINT_WORDS = {
    "architecture": "a different architecture or input size",
    "data": "different training data",
}


def _schedule_flags(config: dict[str, Any]) -> str:
    """The settings that keep a run's schedule when ``epochs`` changes (both derive from it by default)."""
    flags = f"`warmup_epochs`={config['warmup_epochs']}"
    if config.get("milestones"):
        flags += " `milestones`=" + ",".join(str(m) for m in config["milestones"])
    return flags


def check_resumable(state: dict[str, Any], config: TrainConfig, fingerprint: dict[str, str] | None = None) -> None:
    """Refuse to resume with options, a model or data that would change what the finished epochs computed."""
    stored_print = state.get("fingerprint") or {}
    for key, words in _FINGERPRINT_WORDS.items():
        if fingerprint and key in stored_print and stored_print[key] != fingerprint[key]:
            raise InputError(f"cannot resume: the interrupted run started from {words}")
    stored = state["config"]
    now = config.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and stored.get(k) != now[k])
    derived = {"warmup_epochs", "milestones"}
    if changed and set(changed) <= derived and stored.get("epochs") != now["epochs"]:
        raise InputError(
            f"the schedule follows `epochs`: to extend the run to {now['epochs']} epochs keep the "
            f"interrupted run's schedule with {_schedule_flags(stored)}"
        )
    if changed:
        diffs = ", ".join(f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in changed)
        raise InputError(f"cannot resume with different training options ({diffs})")
    if state["epoch"] >= config.epochs:
        raise InputError(
            f"the run already finished {state['epoch']} of {config.epochs} epochs; raise `epochs` "
            f"(keeping its schedule: {_schedule_flags(stored)})"
        )
