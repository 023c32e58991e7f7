"""Fine-tune a trained (possibly pruned) ReID checkpoint on a target dataset.

The survey's finding (Masson et al., 2019): prune and fine-tune in the target domain. The
architecture is kept exactly as stored (pruned widths included) and its ``pruning`` record is saved
again with the result; only the ID classifier is replaced for the target's identities.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from reidcompress.models.checkpoint import load_model
from reidcompress.models.reid import ReIDNet
from reidcompress.train.callbacks import Callback
from reidcompress.train.config import TrainConfig
from reidcompress.train.engine import TrainResult, train

__all__ = ["finetune_checkpoint"]


def finetune_checkpoint(
    ckpt: str | os.PathLike[str],
    dataset: Any,
    config: TrainConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    teacher: str | os.PathLike[str] | ReIDNet | None = None,
    evaluate: bool = True,
    resume: bool = False,
    callbacks: Iterable[Callback] = (),
    device: str | torch.device = "auto",
    progress: bool = False,
) -> TrainResult:
    """Fine-tune the model stored at ``ckpt`` on ``dataset`` (a ReIDDataset).

    Args:
        ckpt: a reidcompress checkpoint; rebuilt from its stored shapes by ``load_model``.
        dataset: the target data (``train`` items, and ``query``/``gallery`` when ``evaluate``).
        config: the hyper-parameters.
        out: where to write the fine-tuned model (state, log and best model go beside it).
        teacher: a model (or checkpoint) to distil from, e.g. the unpruned network.
        evaluate: evaluate on the dataset's query/gallery every ``config.eval_every`` epochs.
        resume, callbacks, device, progress: as for :func:`reidcompress.train.engine.train`.
    """
    model = load_model(ckpt)
    model.reset_classifier(dataset.num_train_pids)
    teacher_model = load_model(teacher) if isinstance(teacher, (str, os.PathLike)) else teacher
    meta = {
        "finetuned_from": str(Path(ckpt)),
        "dataset": getattr(dataset, "name", None),
        "data_root": getattr(dataset, "root", None),  # as `train` records it: the data the classifier knows
        "teacher": str(teacher) if isinstance(teacher, (str, os.PathLike)) else None,
    }
    return train(
        model,
        dataset.train,
        config,
        callbacks=callbacks,
        eval_data=dataset if evaluate else None,
        out=out,
        resume=resume,
        teacher=teacher_model,
        device=device,
        meta=meta,
        progress=progress,
    )
