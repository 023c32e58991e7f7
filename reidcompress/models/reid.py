"""The ReID network: ResNet trunk, pooling, BNNeck and a training-only ID classifier.

The strong-baseline shape (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
Re-identification", 2019): the triplet loss sees the pooled feature before the BNNeck, the ID loss
the classifier after it, and inference returns the BNNeck output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reidcompress.errors import ArchitectureError
from reidcompress.models._surgery import resize_modules, weight_shapes
from reidcompress.models.resnet import STAGES, build_backbone

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ReIDConfig", "ReIDNet", "GeM"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLINGS = ("avg", "gem")
NECKS = ("bnneck", "none")


@dataclass(frozen=True)
class ReIDConfig:
    """Everything needed to rebuild a ReID network, apart from its (possibly pruned) weights.

    ``mean``/``std`` are in [0, 1] pixel units: the model takes RGB images scaled to [0, 1] and
    normalises them itself, so ONNX/TensorRT exports and evaluation always use the same numbers.
    """

    arch: str = "resnet50"
    last_stride: int = 1
    pooling: str = "avg"
    neck: str = "bnneck"
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


def _trunk_channels(backbone: nn.Module) -> int:
    layer4: Any = backbone.get_submodule("layer4")
    last = layer4[-1]
    return int((last.bn3 if hasattr(last, "bn3") else last.bn2).num_features)


class ReIDNet(nn.Module):
    """A Siamese ReID feature extractor.

    ``forward(images)`` takes RGB float images in [0, 1], shape (N, 3, H, W). In eval mode it
    returns the embedding (N, D): the BNNeck output, or the pooled feature when ``neck="none"``.
    In train mode it returns ``(pooled_feature, logits)`` for the triplet and ID losses
    (``logits`` is None without a classifier).
    """

    def __init__(self, config: ReIDConfig, shapes: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.pruning: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}
        self.backbone = build_backbone(config.arch, config.last_stride, config.maxpool_ceil)
        feat_dim = _trunk_channels(self.backbone)
        self.pool: nn.Module = GeM() if config.pooling == "gem" else nn.AdaptiveAvgPool2d(1)
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
        return _trunk_channels(self.backbone)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("pixel_mean"), self.get_buffer("pixel_std")
        return (images - mean.to(images.dtype)) / std.to(images.dtype)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last feature map (N, C, h, w) for [0, 1] images."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(self.normalize(images)))))
        for stage in STAGES:
            x = getattr(b, stage)(x)
        return x

    def forward_train(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled feature before the BNNeck, ID logits) whatever the module's mode."""
        feat = self.pool(self.forward_features(images)).flatten(1)
        logits = self.classifier(self.bnneck(feat)) if self.classifier is not None else None
        return feat, logits

    def forward(self, images: torch.Tensor) -> Any:
        if self.training:
            return self.forward_train(images)
        return self.bnneck(self.pool(self.forward_features(images)).flatten(1))

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
