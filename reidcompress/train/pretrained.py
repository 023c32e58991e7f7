"""A fresh ReID network for training, optionally starting from another checkpoint's trunk."""

from __future__ import annotations

import os

from reidcompress.errors import ArchitectureError
from reidcompress.models.checkpoint import read_checkpoint
from reidcompress.models.reid import MODEL_DEFAULTS, ReIDConfig, ReIDNet

__all__ = ["build_model", "load_backbone"]


def build_model(
    arch: str,
    num_classes: int,
    input_size: tuple[int, int] = MODEL_DEFAULTS.input_size,
    *,
    pretrained: str | os.PathLike[str] | None = None,
    last_stride: int = MODEL_DEFAULTS.last_stride,
    pooling: str = MODEL_DEFAULTS.pooling,
) -> ReIDNet:
    """A ReIDNet with a BNNeck and an ID classifier for ``num_classes`` identities (and the
    architecture's own embedding layer, e.g. OSNet's 512-d ``fc``, before the BNNeck).

    ``pretrained`` is a reidcompress checkpoint (e.g. ``reidcompress import --format torchvision``
    of ImageNet weights, or ``--format torchreid`` of torchreid's ImageNet OSNet): its trunk is
    loaded, the BNNeck and classifier start fresh.
    """
    model = ReIDNet(
        ReIDConfig(arch=arch, num_classes=num_classes, input_size=input_size, last_stride=last_stride, pooling=pooling)
    )
    if pretrained is not None:
        load_backbone(model, pretrained)
    return model


def load_backbone(model: ReIDNet, path: str | os.PathLike[str]) -> None:
    """Copy the ``backbone.*`` weights of the checkpoint at ``path`` into ``model`` (shapes must match),
    and its ``fc`` embedding layer when both have one of the same shape (torchreid's ImageNet OSNets
    carry a trained 512-d ``fc``, which torchreid's own fine-tuning starts from too)."""
    ckpt = read_checkpoint(path)
    src_arch = ckpt["config"].get("arch")
    if src_arch != model.config.arch:
        raise ArchitectureError(f"{path}: holds a {src_arch!r} trunk, but the model is {model.config.arch!r}")
    trunk = {k.removeprefix("backbone."): v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    if not trunk:
        raise ArchitectureError(f"{path}: no backbone weights in the checkpoint")
    own = model.backbone.state_dict()
    bad = [k for k, v in trunk.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in trunk]
    if bad or missing:
        what = f"unexpected or reshaped {bad[:3]}" if bad else f"missing {missing[:3]}"
        raise ArchitectureError(f"{path}: backbone weights do not fit {model.config.arch!r} ({what})")
    model.backbone.load_state_dict(trunk, strict=True)
    fc = {k.removeprefix("fc."): v for k, v in ckpt["state_dict"].items() if k.startswith("fc.")}
    if model.fc is not None and fc:
        own_fc = model.fc.state_dict()
        if set(fc) == set(own_fc) and all(tuple(own_fc[k].shape) == tuple(v.shape) for k, v in fc.items()):
            model.fc.load_state_dict(fc, strict=True)
