"""Image loading, transforms and the train/eval loaders on a real (synthetic) JPEG dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidcompress.data.datasets import ImageItem, load_dataset
from reidcompress.data.loader import ImageDataset, build_eval_loader, build_train_loader, load_image
from reidcompress.data.transforms import build_transforms, pad_for
from reidcompress.errors import DatasetError
from reidcompress.models.reid import IMAGENET_MEAN


def test_load_image_converts_to_rgb_and_reports_bad_files(tmp_path: Path) -> None:
    Image.new("LA", (8, 16), (100, 50)).save(tmp_path / "gray.png")
    im = load_image(tmp_path / "gray.png")
    assert im.mode == "RGB" and im.size == (8, 16) and im.getpixel((0, 0)) == (100, 100, 100)
    with pytest.raises(DatasetError, match="image not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot read image .*broken.jpg"):
        load_image(tmp_path / "broken.jpg")


def test_eval_transform_is_a_plain_resize() -> None:
    img = Image.fromarray(np.arange(40 * 20 * 3, dtype=np.uint8).reshape(40, 20, 3))
    x = build_transforms((64, 32), train=False)(img)
    assert x.shape == (3, 64, 32) and x.dtype == torch.float32
    expected = np.asarray(img.resize((32, 64), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)


def test_train_transform_erases_with_the_imagenet_mean() -> None:
    torch.manual_seed(0)
    t = build_transforms((64, 32), train=True, erasing_p=1.0)
    x = t(Image.new("RGB", (32, 64), (255, 255, 255)))
    assert x.shape == (3, 64, 32) and x.min() >= 0.0 and x.max() <= 1.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    erased = torch.isclose(x, mean.expand_as(x), atol=1e-6).all(0)
    assert erased.float().mean() > 0.01  # an erased rectangle filled with the mean, not zeros
    assert pad_for((256, 128)) == 10 and pad_for((64, 32)) == 2


def test_train_transform_augments_deterministically_under_a_seed() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8))
    t = build_transforms((64, 32), train=True)
    torch.manual_seed(1)
    a = torch.stack([t(img) for _ in range(4)])
    torch.manual_seed(1)
    b = torch.stack([t(img) for _ in range(4)])
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])


def test_image_dataset_items() -> None:
    items = [ImageItem("a.jpg", 3, 1)]
    ds = ImageDataset(items, lambda im: torch.zeros(1))
    assert len(ds) == 1
    with pytest.raises(DatasetError, match="image not found"):
        ds[0]


def test_train_loader_pk_batches(synth_root: Path) -> None:
    data = load_dataset(synth_root)
    loader = build_train_loader(data.train, (64, 32), p=3, k=2, seed=0)
    loader.batch_sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == len(loader.batch_sampler) >= 2  # about every train image once
    x, pids, camids, index = batches[0]
    assert x.shape == (6, 3, 64, 32) and x.dtype == torch.float32
    assert sorted(Counter(pids.tolist()).values()) == [2, 2, 2]
    for pid, cam, i in zip(pids.tolist(), camids.tolist(), index.tolist(), strict=True):
        assert (data.train[i].pid, data.train[i].camid) == (pid, cam)
    seen = {p for _, pids, _, _ in batches for p in pids.tolist()}
    assert seen == set(range(data.num_train_pids))


def test_eval_loader_keeps_order(synth_root: Path) -> None:
    data = load_dataset(synth_root)
    loader = build_eval_loader(data.gallery, (64, 32), batch_size=16)
    xs, pids, index = [], [], []
    for x, p, _, i in loader:
        xs.append(x)
        pids += p.tolist()
        index += i.tolist()
    assert index == list(range(len(data.gallery)))
    assert pids == [it.pid for it in data.gallery]
    first = build_transforms((64, 32), train=False)(load_image(data.gallery[0].path))
    assert torch.equal(xs[0][0], first)
