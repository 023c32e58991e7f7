"""What pruning needs from data and training: calibration batches, the calibration loss, fine-tuning.

Training-time methods and fine-tuning run in the project's training engine
(``reidcompress.train.engine.train``) through its Callback interface; nothing here is a training loop.
The data and training packages are imported on use, so weight-only methods never load them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch

from reidcompress.models.reid import ReIDNet

__all__ = [
    "PruneData",
    "load_prune_data",
    "calibration_loss",
    "heldout_map",
    "training_options",
    "LENGTH_FIELDS",
    "TRIPLET_MARGIN",
    "MIN_HELDOUT_IDS",
]

TRIPLET_MARGIN = 0.3
# Accuracy-driven methods need a query/gallery set with a few identities at least.
MIN_HELDOUT_IDS = 4


def calibration_loss(model: ReIDNet, images: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """The survey's training loss, batch-hard triplet on the pooled feature, for data-driven criteria.

    The ID loss is left out on purpose: the classifier of a checkpoint may have been trained on other
    identities than the calibration images'.
    """
    from reidcompress.train.losses import triplet_batch_hard

    feats, _ = model.forward_train(images)
    return triplet_batch_hard(feats, pids, margin=TRIPLET_MARGIN)


# TrainConfig fields tied to a run's length: each PruneData.fit scales its own schedule to its epochs.
LENGTH_FIELDS = ("epochs", "warmup_epochs", "milestones", "eval_every", "eval_batch_size")


def training_options(section: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's ``finetune`` section (or TrainConfig fields) as ``PruneData.train_options``: the
    optimiser and loss settings, without the lengths that each pruning-time fit sets for itself."""
    return {k: v for k, v in section.items() if k not in LENGTH_FIELDS}


@dataclass(frozen=True)
class PruneData:
    """A training split used to calibrate criteria and to train during/after pruning.

    Attributes:
        items: training images (``reidcompress.data.ImageItem``), pids relabelled 0..N-1.
        p, k: identities per batch and images per identity (batch-hard triplets need k >= 2).
        seed: sampling seed; calibration batches are the same on every run.
        device: where calibration and training run.
        train_options: ``TrainConfig`` fields (lr, weight_decay...) for training-time methods and
            fine-tuning; each call scales the strong-baseline schedule (warm-up, lr steps) to its
            own number of epochs with ``TrainConfig.for_epochs``.
    """

    items: Sequence[Any]
    p: int = 16
    k: int = 4
    seed: int = 0
    device: str = "cpu"
    train_options: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def num_pids(self) -> int:
        return len({it.pid for it in self.items})

    @property
    def batch_ids(self) -> int:
        """P, capped by the number of identities (small calibration sets)."""
        return min(self.p, self.num_pids)

    def calibration_batches(self, input_size: tuple[int, int], n: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """``n`` identity-balanced batches (images, pids, ...) of un-augmented images."""
        from torch.utils.data import DataLoader

        from reidcompress.data.loader import ImageDataset
        from reidcompress.data.sampler import PKSampler
        from reidcompress.data.transforms import build_transforms

        sampler = PKSampler([it.pid for it in self.items], self.batch_ids, self.k, seed=self.seed)
        dataset = ImageDataset(list(self.items), build_transforms(input_size, train=False))
        return islice(iter(DataLoader(dataset, batch_sampler=sampler, num_workers=0)), n)

    def fit(self, model: ReIDNet, epochs: int, callbacks: Sequence[Any] = ()) -> None:
        """Train ``model`` in place for ``epochs`` epochs with the given training-engine callbacks.

        The ID classifier is replaced when it does not cover these identities (a checkpoint trained on
        another dataset); warm-up and learning-rate steps keep the strong baseline's proportions.
        """
        from reidcompress.train.config import TrainConfig
        from reidcompress.train.engine import train

        if model.classifier is None or model.classifier.out_features != self.num_pids:
            model.reset_classifier(self.num_pids)
        options = {"p": self.batch_ids, "k": self.k, "seed": self.seed, "num_workers": 0, **(self.train_options or {})}
        options["p"] = min(int(options["p"]), self.num_pids)  # a recipe's P=16 on a set with fewer identities
        if "warmup_epochs" in options:
            # A warm-up set for long runs would leave a short fit (a controller's one-epoch recovery)
            # entirely at the warm-up learning rate.
            options["warmup_epochs"] = min(options["warmup_epochs"], max(epochs - 1, 0))
        config = TrainConfig.for_epochs(epochs, **options)
        train(model, list(self.items), config, callbacks=tuple(callbacks), device=self.device)
        model.eval()

    def split_identities(self, fraction: float) -> tuple[PruneData, Any]:
        """Hold out ``fraction`` of the training identities as a validation query/gallery set.

        Accuracy-driven methods measure ReID accuracy on identities their pruning steps never train on,
        and never on the test query/gallery. Each held-out identity gives one query image per camera
        (its first, by path) and the rest to the gallery. Returns (the other identities, relabelled
        0..N-1, as PruneData; the held-out ``ReIDDataset``).
        """
        from reidcompress.data.datasets import ImageItem, ReIDDataset, relabel
        from reidcompress.errors import DatasetError

        pids = sorted({it.pid for it in self.items})
        n_out = max(MIN_HELDOUT_IDS, round(fraction * len(pids)))
        if len(pids) - n_out < 2:
            raise DatasetError(
                f"{len(pids)} training identities are too few to hold out {n_out} for validation and train on the rest"
            )
        order = torch.randperm(len(pids), generator=torch.Generator().manual_seed(self.seed)).tolist()
        held = {pids[i] for i in order[:n_out]}
        query: list[ImageItem] = []
        gallery: list[ImageItem] = []
        firsts: set[tuple[int, int]] = set()
        for it in sorted((it for it in self.items if it.pid in held), key=lambda it: it.path):
            first = (it.pid, it.camid) not in firsts
            firsts.add((it.pid, it.camid))
            (query if first else gallery).append(it)
        rest = relabel(it for it in self.items if it.pid not in held)
        val = ReIDDataset("heldout", "", [], query, gallery)
        return dataclasses.replace(self, items=tuple(rest)), val


def heldout_map(model: ReIDNet, val: Any, device: str) -> float:
    """mAP (percent) of ``model`` on a held-out query/gallery set (``PruneData.split_identities``)."""
    from reidcompress.evaluation.features import evaluate_embedder
    from reidcompress.runtime import TorchEmbedder

    was_training = model.training
    try:
        return float(evaluate_embedder(TorchEmbedder(model, device=device), val, progress=False)["mAP"])
    finally:
        model.train(was_training)


def load_prune_data(root: str | os.PathLike[str], dataset: str = "market1501", **kwargs: Any) -> PruneData:
    """The training split of a dataset on disk, for calibration and training-time methods."""
    from reidcompress.data.datasets import load_dataset

    return PruneData(items=tuple(load_dataset(root, dataset).train), **kwargs)
