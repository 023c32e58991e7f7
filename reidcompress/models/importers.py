"""Import checkpoints users already have: torchvision, torchreid and fast-reid ResNets.

Each importer maps the framework's key layout onto ``ReIDNet`` and picks the config that makes the
imported model compute the same embedding as the framework's own eval-mode forward:

- torchvision (ImageNet classifier weights): the trunk only; a fresh BNNeck, no ID classifier.
  A starting point for ``reidcompress train --pretrained``.
- torchreid ``resnet*``: ``state_dict`` key (``module.`` prefixes stripped), classifier with bias,
  no BNNeck (torchreid returns the pooled feature), last stride 2 (torchreid's default).
- fast-reid Baseline: ``model`` key, ``backbone.*`` trunk, ``heads.bottleneck.0.*`` BNNeck when
  trained WITH_BNNECK (eval returns the feature after it), ``heads.weight`` bias-free classifier,
  ``heads.pool_layer.p`` when pooled with GeM, last stride 1, and fast-reid's ceil-mode max-pool stem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from reidcompress.errors import ArchitectureError, CheckpointError, InputError
from reidcompress.models.checkpoint import load_raw, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet

__all__ = ["FORMATS", "import_checkpoint", "convert_state_dict"]

StateDict = dict[str, torch.Tensor]


def _tensors(obj: Any, key: str | None, src: str, required: bool = False) -> StateDict:
    if required and not (isinstance(obj, Mapping) and key in obj):
        raise CheckpointError(f"{src}: expected a dict with a {key!r} state dict")
    if key is not None and isinstance(obj, Mapping) and key in obj:
        obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        expected = f"a dict with a {key!r} state dict" if key else "a plain state dict"
        raise CheckpointError(f"{src}: expected {expected} of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _torchvision(obj: Any, src: str) -> tuple[StateDict, dict[str, Any]]:
    sd = _tensors(obj, "state_dict", src)
    mapped = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    return mapped, {"neck": "bnneck", "num_classes": 0, "last_stride": 1}


def _torchreid(obj: Any, src: str) -> tuple[StateDict, dict[str, Any]]:
    sd = _tensors(obj, "state_dict", src)
    mapped: StateDict = {}
    for k, v in sd.items():
        mapped[k if k.startswith("classifier.") else f"backbone.{k}"] = v
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 0
    return mapped, {
        "neck": "none",
        "num_classes": num_classes,
        "classifier_bias": "classifier.bias" in sd,
        "last_stride": 2,
    }


def _fastreid(obj: Any, src: str) -> tuple[StateDict, dict[str, Any]]:
    sd = _tensors(obj, "model", src, required=True)
    mapped: StateDict = {}
    for k, v in sd.items():
        if k in ("pixel_mean", "pixel_std"):
            continue
        if k.startswith("backbone."):
            mapped[k] = v
        elif k.startswith("heads.bottleneck.0."):
            if k.endswith(".weight") and v.dim() != 1:
                raise ArchitectureError(
                    f"{src}: fast-reid heads with an embedding conv (EMBEDDING_DIM > 0) are not supported"
                )
            mapped["bnneck." + k.removeprefix("heads.bottleneck.0.")] = v
        elif k == "heads.weight":
            mapped["classifier.weight"] = v
        elif k == "heads.pool_layer.p":
            mapped["pool.p"] = v
        else:
            mapped[k] = v  # reported as unexpected when loading
    return mapped, {
        "neck": "bnneck" if "bnneck.weight" in mapped else "none",
        "pooling": "gem" if "pool.p" in mapped else "avg",
        "num_classes": mapped["classifier.weight"].shape[0] if "classifier.weight" in mapped else 0,
        "classifier_bias": False,
        "last_stride": 1,
        "maxpool_ceil": True,
    }


FORMATS: dict[str, Callable[[Any, str], tuple[StateDict, dict[str, Any]]]] = {
    "torchvision": _torchvision,
    "torchreid": _torchreid,
    "fastreid": _fastreid,
}


def _fill_missing_head(model: ReIDNet, sd: StateDict) -> StateDict:
    """Keep the freshly initialised head entries a backbone-only checkpoint does not have."""
    own = model.state_dict()
    head = ("bnneck.", "pool.", "classifier.")
    missing_trunk = [k for k in own if k not in sd and not k.startswith(head)]
    if missing_trunk:
        raise ArchitectureError(
            f"weights do not fit architecture {model.config.arch!r}: missing {len(missing_trunk)} keys, "
            f"e.g. {', '.join(missing_trunk[:3])}"
        )
    return {**{k: v for k, v in own.items() if k.startswith(head)}, **sd}


def convert_state_dict(obj: Any, fmt: str, arch: str, src: str = "input", **overrides: Any) -> ReIDNet:
    """Build a ReIDNet from a loaded foreign checkpoint object."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    sd, cfg = FORMATS[fmt](obj, src)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    config = ReIDConfig(arch=arch, **cfg)
    template = ReIDNet(config)
    sd = _fill_missing_head(template, sd)
    try:
        return ReIDNet.from_state_dict(config, sd)
    except ArchitectureError as e:
        raise ArchitectureError(f"{src}: {e} (is --arch right for this {fmt} checkpoint?)") from None


def import_checkpoint(
    src: str | os.PathLike[str],
    fmt: str,
    arch: str,
    out: str | os.PathLike[str],
    *,
    last_stride: int | None = None,
    pooling: str | None = None,
    input_size: tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> ReIDNet:
    """Convert ``src`` (a ``fmt`` checkpoint of ``arch``) into a reidcompress checkpoint at ``out``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = convert_state_dict(
        load_raw(src),
        fmt,
        arch,
        str(src),
        last_stride=last_stride,
        pooling=pooling,
        input_size=input_size,
        mean=mean,
        std=std,
    )
    save_model(out, model, meta={"imported_from": {"format": fmt, "path": str(Path(src).resolve())}})
    return model.eval()
