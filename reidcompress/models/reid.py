"""The ReID network: a registered trunk (``models/backbones.py``), then the ReID head: pooling, the
framework's own embedding layer if it has one (OSNet's ``fc``), BNNeck and a training-only ID classifier.

The strong-baseline shape (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
Re-identification", 2019): the triplet loss sees the feature before the BNNeck, the ID loss the
classifier after it, and inference returns the BNNeck output. With ``neck="none"`` inference returns
the feature itself, as torchreid's models do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.errors import ArchitectureError
from reidcompress.models._surgery import resize_modules, weight_shapes
from reidcompress.models.backbones import build_backbone, get_backbone

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MODEL_DEFAULTS", "ReIDConfig", "ReIDNet", "GeM"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLINGS = ("avg", "gem")
NECKS = ("bnneck", "none")


@dataclass(frozen=True)
class ReIDConfig:
    """Everything needed to rebuild a ReID network, apart from its (possibly pruned) weights.

    ``mean``/``std`` are in [0, 1] pixel units: the model takes RGB images scaled to [0, 1] and
    normalises them itself, so ONNX/TensorRT exports and evaluation always use the same numbers.
    ``fc_dim`` is the width of the embedding layer between pooling and BNNeck (Linear +
    BatchNorm1d + ReLU, OSNet's ``fc``); None means the architecture's own (512 for OSNet, none
    for the others) and is resolved when the config is made, so a saved config is explicit.
    These field defaults are the model defaults of every command (``MODEL_DEFAULTS``).
    """

    arch: str = "resnet50"
    last_stride: int = 1
    pooling: str = "avg"
    neck: str = "bnneck"
    fc_dim: int | None = None
    num_classes: int = 0
    classifier_bias: bool = False
    maxpool_ceil: bool = False
    input_size: tuple[int, int] = (256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ArchitectureError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.neck not in NECKS:
            raise ArchitectureError(f"neck must be one of {NECKS}, got {self.neck!r}")
        if len(self.input_size) != 2 or min(self.input_size) < 16:
            raise ArchitectureError(f"input_size must be (height, width) >= 16, got {self.input_size}")
        if self.fc_dim is None:
            object.__setattr__(self, "fc_dim", get_backbone(self.arch).fc_dim)
        elif self.fc_dim < 0:
            raise ArchitectureError(f"fc_dim must be >= 0 (0: no embedding layer), got {self.fc_dim}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReIDConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ArchitectureError(f"unknown model config keys: {sorted(unknown)}")
        kw = dict(d)
        for key in ("input_size", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def replace(self, **changes: Any) -> ReIDConfig:
        return dataclasses.replace(self, **changes)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent (Radenović et al., 2018), as fast-reid's
    ``GeneralizedMeanPoolingP``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


MODEL_DEFAULTS = ReIDConfig()


def _embedding_layer(in_dim: int, dim: int) -> nn.Sequential:
    """torchreid's ``_construct_fc_layer``: Linear + BatchNorm1d + ReLU, initialised as torchreid does."""
    linear = nn.Linear(in_dim, dim)
    nn.init.normal_(linear.weight, 0, 0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(linear, nn.BatchNorm1d(dim), nn.ReLU())


class ReIDNet(nn.Module):
    """A Siamese ReID feature extractor.

    ``forward(images)`` takes RGB float images in [0, 1], shape (N, 3, H, W). In eval mode it
    returns the embedding (N, D): the BNNeck output, or the feature before it (the pooled trunk
    output, or the ``fc`` output when the architecture has one) when ``neck="none"``. In train mode
    it returns ``(feature, logits)`` for the triplet and ID losses (``logits`` is None without a
    classifier).
    """

    def __init__(self, config: ReIDConfig, shapes: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.pruning: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}
        # Any: each architecture's trunk has its own attributes (ResNet's layer4, OSNet's conv5...).
        backbone: Any = build_backbone(config.arch, config.last_stride, config.maxpool_ceil)
        self.backbone = backbone
        feat_dim = int(backbone.num_features)
        self.pool: nn.Module = GeM() if config.pooling == "gem" else nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Sequential | None = _embedding_layer(feat_dim, config.fc_dim) if config.fc_dim else None
        feat_dim = config.fc_dim or feat_dim
        self.bnneck: nn.Module = nn.BatchNorm1d(feat_dim) if config.neck == "bnneck" else nn.Identity()
        self.classifier: nn.Linear | None = (
            nn.Linear(feat_dim, config.num_classes, bias=config.classifier_bias) if config.num_classes > 0 else None
        )
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self._init_head()
        if shapes:
            resize_modules(self, shapes)
            self._init_head()

    def _init_head(self) -> None:
        if isinstance(self.bnneck, nn.BatchNorm1d):
            # BNNeck: the bias is frozen at zero so the ID loss cannot shift the embedding (Luo et al.).
            nn.init.ones_(self.bnneck.weight)
            nn.init.zeros_(self.bnneck.bias)
            self.bnneck.bias.requires_grad_(False)
        self._init_classifier()

    @property
    def embedding_dim(self) -> int:
        if isinstance(self.bnneck, nn.BatchNorm1d):
            return self.bnneck.num_features
        if self.fc is not None:
            return cast(nn.BatchNorm1d, self.fc[1]).num_features
        return int(self.backbone.num_features)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("pixel_mean"), self.get_buffer("pixel_std")
        return (images - mean.to(images.dtype)) / std.to(images.dtype)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map (N, C, h, w) for [0, 1] images."""
        return self.backbone(self.normalize(images))

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """The feature before the BNNeck: pooled, then through ``fc`` when there is one."""
        feat = self.pool(fmap).flatten(1)
        return self.fc(feat) if self.fc is not None else feat

    def forward_train(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(feature before the BNNeck, ID logits) whatever the module's mode."""
        feat = self.forward_head(self.forward_features(images))
        logits = self.classifier(self.bnneck(feat)) if self.classifier is not None else None
        return feat, logits

    def forward(self, images: torch.Tensor) -> Any:
        if self.training:
            return self.forward_train(images)
        return self.bnneck(self.forward_head(self.forward_features(images)))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the ID classifier (fine-tuning on a dataset with other identities)."""
        dim = self.embedding_dim
        self.classifier = nn.Linear(dim, num_classes, bias=self.config.classifier_bias) if num_classes > 0 else None
        if self.classifier is not None:
            ref = next(self.parameters())
            self.classifier.to(device=ref.device, dtype=ref.dtype)
        self.config = self.config.replace(num_classes=num_classes)
        self._init_classifier()

    def _init_classifier(self) -> None:
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)

    @classmethod
    def from_state_dict(cls, config: ReIDConfig, state_dict: Mapping[str, torch.Tensor]) -> ReIDNet:
        """Rebuild a (possibly pruned) model from its weights' shapes and load them strictly."""
        model = cls(config, shapes=weight_shapes(state_dict))
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ArchitectureError(
                f"weights do not fit architecture {config.arch!r}: {' '.join(s.strip() for s in first[:3])[:400]}"
            ) from None
        return model
