"""Training and fine-tuning: batch-hard triplet + ID losses, the callback-driven engine, DDP."""

from reidcompress.train.callbacks import Callback, DistillationCallback
from reidcompress.train.config import TrainConfig
from reidcompress.train.engine import Trainer, TrainResult, train
from reidcompress.train.losses import CrossEntropyLabelSmooth, triplet_batch_hard

__all__ = [
    "Callback",
    "DistillationCallback",
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "train",
    "CrossEntropyLabelSmooth",
    "triplet_batch_hard",
]
