"""Sample images preprocessed exactly like evaluation: for parity checks and INT8 calibration.

One pipeline feeds the ONNX parity check, TensorRT's INT8 calibrator and ONNX Runtime's static
quantisation, so every path sees the same pixels the evaluation does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from reidcompress.data.datasets import ImageItem, load_dataset
from reidcompress.data.loader import build_eval_loader
from reidcompress.errors import DatasetError, InputError

__all__ = ["sample_items", "image_batches", "calibration_items", "calibration_batches", "reference_images"]


def sample_items(items: Sequence[ImageItem], n: int, seed: int = 0) -> list[ImageItem]:
    """A deterministic random subset of at most ``n`` items (in a stable order)."""
    if not items:
        raise DatasetError("no images to sample from")
    if n < 1:
        raise InputError(f"the number of images must be >= 1, got {n}")
    idx = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in sorted(idx)]


def image_batches(
    items: Sequence[ImageItem], input_size: tuple[int, int], batch_size: int = 32
) -> Iterator[np.ndarray]:
    """float32 NCHW batches in [0, 1], resized like evaluation (the model normalises itself)."""
    for images, *_ in build_eval_loader(items, input_size, batch_size=batch_size):
        yield np.ascontiguousarray(images.numpy())


def calibration_items(
    data: str | os.PathLike[str], *, dataset: str = "market1501", num_images: int = 512, seed: int = 0
) -> list[ImageItem]:
    """The calibration images: a fixed sample of a dataset's training split (target domain, never the test set).

    Cheap (file names only), so commands call it first to refuse bad calibration data before writing anything.
    """
    return sample_items(load_dataset(data, dataset).train, num_images, seed)


def calibration_batches(
    data: str | os.PathLike[str],
    input_size: tuple[int, int],
    *,
    dataset: str = "market1501",
    num_images: int = 512,
    batch_size: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """INT8 calibration batches of :func:`calibration_items`, preprocessed like evaluation."""
    items = calibration_items(data, dataset=dataset, num_images=num_images, seed=seed)
    return list(image_batches(items, input_size, batch_size))


def reference_images(
    input_size: tuple[int, int], data: str | os.PathLike[str] | None = None, dataset: str = "market1501", n: int = 16
) -> np.ndarray:
    """A batch of real person images for parity checks: the dataset's queries, or rendered people.

    Without a dataset, a few synthetic people are rendered and JPEG-encoded to a temporary folder and
    read back through the evaluation pipeline, so the check still runs on decoded person images.
    """
    if data is not None:
        items = sample_items(load_dataset(data, dataset).query, n)
        return np.concatenate(list(image_batches(items, input_size, n)))
    from reidcompress.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "people"
        synthesize(root, ids=4, cams=2, images_per_id=4, seed=0, size=input_size)
        ds = load_dataset(root)
        items = sample_items(list(ds.train) + list(ds.gallery), n)
        return np.concatenate(list(image_batches(items, input_size, n)))
