"""``TrainConfig``: every hyper-parameter of a training or fine-tuning run, as plain values.

Defaults follow the strong baseline (Luo et al., "Bag of Tricks and a Strong Baseline for Deep
Person Re-identification", 2019): Adam at 3.5e-4 with 10 warm-up epochs from 3.5e-5, x0.1 at
epochs 40 and 70 over 120 epochs, P=16 x K=4, triplet margin 0.3, label smoothing 0.1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reidcompress.errors import InputError
from reidcompress.train.losses import DISTILL_KINDS

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine")
# Fields that may change when a run is resumed: they do not alter what was already trained. Where
# decoded images come from (memory or disk) does not change the batches; the number of workers changes
# the augmentation streams of the epochs still to come, and channels-last only their rounding (a state
# from before None existed holds True, which then meant CUDA only).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "eval_every", "eval_batch_size", "num_workers", "cache_images_mb", "channels_last"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run. ``epoch`` numbers (milestones) are 0-based epoch indices.

    ``num_workers`` processes decode the training images; when they take at most ``cache_images_mb``
    MiB (uint8 at the input size) they are decoded once and kept in memory, and the workers are needed
    only for that first pass. The augmentation draws from one stream per worker, as torch's DataLoader
    seeds them (``data.loader.TrainLoader.epoch_streams``), so a seed trains the same model for the same
    ``num_workers`` whether or not the images are kept in memory, and (for one worker or more) the same
    model as the previous release's per-image loading.

    ``channels_last``: None uses it on CUDA only. On a CPU it is about 10% faster, but its convolutions
    add in another order, and training amplifies that rounding into a different model: opt in with True
    when a seed need not reproduce an NCHW run. ``amp`` applies on CUDA only.
    """

    epochs: int = 120
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    warmup_epochs: int = 10
    warmup_factor: float = 0.1
    schedule: str = "step"
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1
    min_lr_factor: float = 0.0
    p: int = 16
    k: int = 4
    margin: float = 0.3
    soft_margin: bool = False
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float = 0.0
    amp: bool = True
    channels_last: bool | None = None
    seed: int = 0
    eval_every: int = 10
    eval_batch_size: int = 64
    num_workers: int = 2
    cache_images_mb: float = 1024.0
    distill_weight: float = 1.0
    distill_loss: str = "mse"
    best_metric: str = "mAP"

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        for msg in _problems(self):
            raise InputError(msg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain dict (a recipe file, a checkpoint's meta); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown training options {unknown}; valid: {', '.join(sorted(known))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"invalid training options: {e}") from None

    def uses_channels_last(self, device_type: str) -> bool:
        """Whether training on ``device_type`` ("cpu", "cuda") runs channels-last."""
        return self.channels_last if self.channels_last is not None else device_type == "cuda"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_epochs(cls, epochs: int, **options: Any) -> TrainConfig:
        """A config whose warm-up and milestones keep the strong baseline's proportions over ``epochs``.

        The baseline warms up for 10 of 120 epochs and decays at 40 and 70; a 12-epoch run gets
        1 warm-up epoch and decays at 4 and 7. Explicit ``warmup_epochs``/``milestones`` win.
        """
        scale = epochs / 120
        options.setdefault("warmup_epochs", min(round(10 * scale), max(epochs - 1, 0)))
        options.setdefault("milestones", tuple(sorted({max(1, round(m * scale)) for m in (40, 70)})))
        return cls.from_dict({**options, "epochs": epochs})

    @classmethod
    def from_recipe(cls, section: Mapping[str, Any], epochs: int | None = None, **overrides: Any) -> TrainConfig:
        """A config from a recipe's ``train`` or ``finetune`` section, ``overrides`` on top.

        When ``epochs`` differs from the section's own count, its warm-up and milestones are scaled
        with it (unless overridden), keeping the recipe's schedule proportions; without a count in
        either, the strong baseline's proportions apply (:meth:`for_epochs`).
        """
        base = dict(section)
        own = base.pop("epochs", None)
        epochs = epochs if epochs is not None else own
        if epochs is None:
            raise InputError("no epoch count: give epochs or a recipe section that sets them")
        if own and epochs != own:
            scale = epochs / own
            if "warmup_epochs" in base:
                base["warmup_epochs"] = min(round(base["warmup_epochs"] * scale), max(epochs - 1, 0))
            if "milestones" in base:
                base["milestones"] = tuple(sorted({max(1, round(m * scale)) for m in base["milestones"]}))
        return cls.for_epochs(epochs, **{**base, **overrides})


def _problems(c: TrainConfig) -> list[str]:
    checks = [
        (c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}"),
        (c.lr > 0, f"lr must be > 0, got {c.lr}"),
        (c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}"),
        (c.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}"),
        (c.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {c.schedule!r}"),
        (c.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {c.warmup_epochs}"),
        (0 < c.warmup_factor <= 1, f"warmup_factor must be in (0, 1], got {c.warmup_factor}"),
        (list(c.milestones) == sorted(set(c.milestones)), f"milestones must increase, got {list(c.milestones)}"),
        (0 < c.gamma <= 1, f"gamma must be in (0, 1], got {c.gamma}"),
        (0 <= c.min_lr_factor <= 1, f"min_lr_factor must be in [0, 1], got {c.min_lr_factor}"),
        (c.p >= 2, f"P (identities per batch) must be >= 2 for triplet negatives, got {c.p}"),
        (c.k >= 2, f"K (images per identity) must be >= 2 for triplet positives, got {c.k}"),
        (c.margin >= 0, f"margin must be >= 0, got {c.margin}"),
        (c.id_weight >= 0 and c.triplet_weight >= 0, "loss weights must be >= 0"),
        (c.id_weight + c.triplet_weight > 0, "id_weight and triplet_weight cannot both be 0"),
        (0 <= c.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {c.label_smoothing}"),
        (c.clip_grad >= 0, f"clip_grad must be >= 0 (0 = off), got {c.clip_grad}"),
        (c.eval_every >= 0, f"eval_every must be >= 0 (0 = after the last epoch only), got {c.eval_every}"),
        (c.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {c.eval_batch_size}"),
        (c.num_workers >= 0, f"num_workers must be >= 0, got {c.num_workers}"),
        (c.cache_images_mb >= 0, f"cache_images_mb must be >= 0 (0 = decode from disk), got {c.cache_images_mb}"),
        (c.distill_weight >= 0, f"distill_weight must be >= 0, got {c.distill_weight}"),
        (c.distill_loss in DISTILL_KINDS, f"distill_loss must be one of {', '.join(DISTILL_KINDS)}"),
        (c.best_metric in ("mAP", "rank1", "mINP"), f"best_metric must be mAP, rank1 or mINP, got {c.best_metric!r}"),
    ]
    return [msg for ok, msg in checks if not ok]
