"""Import checkpoints users already have: torchvision ResNets, torchreid (and boxmot) ResNets, OSNets,
IBN-ResNets and MobileNetV2s, fast-reid ResNets and ResNet-IBN-a.

Each importer maps the framework's key layout onto ``ReIDNet`` and picks the config that makes the
imported model compute the same embedding as the framework's own eval-mode forward:

- torchvision (ImageNet classifier weights): the trunk only; a fresh BNNeck, no ID classifier.
  A starting point for ``reidcompress train --pretrained``.
- torchreid (any registered torchreid architecture; boxmot's weights for them are the same plain
  state dicts): ``state_dict`` key or a plain state dict (``module.`` prefixes stripped), classifier
  with bias, no BNNeck, the ``fc`` embedding block when the checkpoint has one (OSNet: eval returns its
  512-d output; the ResNets and MobileNetV2s return the pooled feature), and the architecture's own
  last stride (2 for the ResNets and MobileNetV2s; OSNet's last stage has none).
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
from reidcompress.models.backbones import get_backbone
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


def _torchvision(obj: Any, src: str, arch: str) -> tuple[StateDict, dict[str, Any]]:
    sd = _tensors(obj, "state_dict", src)
    mapped = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    return mapped, {"neck": "bnneck", "num_classes": 0, "last_stride": 1, "fc_dim": 0}


def _torchreid(obj: Any, src: str, arch: str) -> tuple[StateDict, dict[str, Any]]:
    sd = _tensors(obj, "state_dict", src)
    mapped: StateDict = {}
    for k, v in sd.items():
        mapped[k if k.startswith(("classifier.", "fc.")) else f"backbone.{k}"] = v
    fc = sd.get("fc.0.weight")
    if any(k.split(".")[1] not in ("0", "1") for k in sd if k.startswith("fc.")):
        # fc.0 Linear, fc.1 BatchNorm1d (fc.2 ReLU, fc.3 Dropout have no weights); more means a second layer.
        raise ArchitectureError(f"{src}: torchreid models with more than one fc layer are not supported")
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 0
    return mapped, {
        "neck": "none",
        "num_classes": num_classes,
        "classifier_bias": "classifier.bias" in sd,
        "last_stride": get_backbone(arch).framework_last_stride,
        "fc_dim": int(fc.shape[0]) if fc is not None else 0,
    }


def _fastreid(obj: Any, src: str, arch: str) -> tuple[StateDict, dict[str, Any]]:
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
        "fc_dim": 0,
    }


FORMATS: dict[str, Callable[[Any, str, str], tuple[StateDict, dict[str, Any]]]] = {
    "torchvision": _torchvision,
    "torchreid": _torchreid,
    "fastreid": _fastreid,
}


def _fill_missing_head(model: ReIDNet, sd: StateDict) -> StateDict:
    """Keep the freshly initialised head entries a backbone-only checkpoint does not have."""
    own = model.state_dict()
    head = ("bnneck.", "pool.", "classifier.", "fc.")
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
    get_backbone(arch)  # an unknown name fails here, listing the known ones
    sd, cfg = FORMATS[fmt](obj, src, arch)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    config = ReIDConfig(arch=arch, **cfg)
    try:
        template = ReIDNet(config)
        sd = _fill_missing_head(template, sd)
        return ReIDNet.from_state_dict(config, sd)
    except ArchitectureError as e:
        raise ArchitectureError(f"{src}: {e} ({_arch_hint(sd, arch, fmt)})") from None


def _arch_hint(sd: Mapping[str, torch.Tensor], arch: str, fmt: str) -> str:
    if any(".bn1.IN." in k for k in sd) and "ibn_a" not in arch:
        return "the weights have IBN-a layers: try --arch resnet50_ibn_a"
    if any(k.endswith(".gate.fc1.weight") for k in sd) and "osnet" not in arch:
        return "the weights are an OSNet's: try --arch osnet_x1_0 (or the width they were trained at)"
    return f"is --arch right for this {fmt} checkpoint?"


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
