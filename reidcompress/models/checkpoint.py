"""The self-describing checkpoint format.

A checkpoint is data, never code: a dict of plain values and tensors written with ``torch.save`` and
read with ``torch.load(weights_only=True)`` (or a ``.safetensors`` file whose header carries the
same description). It holds the model config (architecture, input size, preprocessing), the
embedding dimension, the state dict, and the pruning record; a pruned model is rebuilt from the
stored weight shapes alone.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from reidcompress import __version__
from reidcompress._io import atomic_path, require_file
from reidcompress.errors import ArchitectureError, CheckpointError
from reidcompress.models.reid import ReIDConfig, ReIDNet

__all__ = ["FORMAT", "save_model", "load_model", "read_checkpoint", "load_raw"]

FORMAT = "reidcompress.checkpoint"
VERSION = 1


def _describe(model: ReIDNet, pruning: dict[str, Any] | None, meta: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "embedding_dim": model.embedding_dim,
        "pruning": pruning,
        "meta": {
            "reidcompress_version": __version__,
            "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            **(meta or {}),
        },
    }


def save_model(
    path: str | os.PathLike[str],
    model: ReIDNet,
    *,
    pruning: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` atomically. ``.safetensors`` paths use safetensors, anything else torch.save."""
    path = Path(path)
    desc = _describe(model, pruning if pruning is not None else getattr(model, "pruning", None), meta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"reidcompress": json.dumps(desc)})
        else:
            torch.save({**desc, "state_dict": state}, tmp)
    return path


def load_raw(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into one clear CheckpointError."""
    p = require_file(path, "checkpoint")
    try:
        # torch warns (on stderr) about pickle protocols it did not write; the error below says enough.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "unsupported global" in msg.lower():
            what = msg[msg.upper().index("GLOBAL") :].split()[1] if "GLOBAL" in msg.upper() else "an object"
            raise CheckpointError(
                f"{p}: refusing to load: the file pickles {what}, i.e. code, not plain weights "
                "(checkpoints are loaded with weights_only=True)"
            ) from None
        raise CheckpointError(f"{p}: corrupt or not a PyTorch checkpoint (the weights-only unpickler failed)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{p}: corrupt or not a PyTorch checkpoint ({first})") from None
    except Exception as e:  # noqa: BLE001 - any text file makes the unpickler fail in its own way (KeyError, IndexError...)
        raise CheckpointError(
            f"{p}: corrupt or not a PyTorch checkpoint ({type(e).__name__} while unpickling)"
        ) from None


def _read_safetensors(p: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from None
    if "reidcompress" not in meta:
        raise CheckpointError(f"{p}: a safetensors file without a reidcompress description")
    return {**json.loads(meta["reidcompress"]), "state_dict": state}


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated checkpoint dict (config, state_dict, pruning, meta...)."""
    p = require_file(path, "checkpoint")
    ckpt = _read_safetensors(p) if p.suffix == ".safetensors" else load_raw(p)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{p}: not a reidcompress checkpoint; convert torchvision, torchreid or fast-reid "
            "files with `reidcompress import`"
        )
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {ckpt['version']} is newer than this reidcompress")
    if not isinstance(ckpt.get("state_dict"), dict) or not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{p}: checkpoint is missing its config or state_dict")
    return ckpt


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> ReIDNet:
    """Rebuild the model described by a checkpoint, in eval mode.

    The returned model carries ``pruning`` and ``meta`` attributes from the checkpoint.
    """
    ckpt = read_checkpoint(path)
    try:
        config = ReIDConfig.from_dict(ckpt["config"])
    except (TypeError, ArchitectureError) as e:
        raise CheckpointError(f"{path}: invalid model config: {e}") from None
    model = ReIDNet.from_state_dict(config, ckpt["state_dict"])
    model.pruning = ckpt.get("pruning")
    model.meta = ckpt.get("meta") or {}
    return model.to(map_location).eval()
