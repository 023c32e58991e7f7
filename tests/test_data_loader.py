"""Image loading, transforms and the train/eval loaders on a real (synthetic) JPEG dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from reidcompress.data.datasets import ImageItem, load_dataset
from reidcompress.data.loader import ImageDataset, build_eval_loader, build_train_loader, decode_images, load_image
from reidcompress.data.transforms import AugmentParams, TrainAugment, build_transforms, pad_for
from reidcompress.errors import DatasetError
from reidcompress.models.reid import IMAGENET_MEAN, ReIDConfig, ReIDNet
from reidcompress.testing import per_image_augment, per_image_train_loader
from reidcompress.train import TrainConfig, engine


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


def _reference_augment(image: torch.Tensor, params: AugmentParams, n: int, pad: int) -> torch.Tensor:
    """torchvision's per-image PIL ops with the parameters TrainAugment drew for image ``n``."""
    pil = TF.to_pil_image(image)
    if params.flip[n]:
        pil = TF.hflip(pil)
    pil = TF.crop(TF.pad(pil, pad), int(params.top[n]), int(params.left[n]), image.shape[1], image.shape[2])
    x = TF.to_tensor(pil)
    i, j, h, w = params.erase[n].tolist()
    return TF.erase(x, i, j, h, w, torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) if h else x


@pytest.mark.parametrize("size", [(64, 32), (128, 64)])
def test_batched_augmentation_equals_torchvision_per_image(size: tuple[int, int]) -> None:
    aug = TrainAugment(size)
    images = torch.randint(0, 256, (32, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = aug.sample(len(images), torch.Generator().manual_seed(1))
    want = torch.stack([_reference_augment(img, params, n, pad_for(size)) for n, img in enumerate(images)])
    assert torch.equal(aug.apply(images, params), want)
    # Every kind of draw occurs in 32 images: both flips, erased and kept, crops off the centre.
    assert 0 < int(params.flip.sum()) < 32 and 0 < int((params.erase[:, 2] > 0).sum()) < 32
    assert set(params.top.tolist()) - {pad_for(size)} and int(params.top.max()) <= 2 * pad_for(size)


def test_draws_are_torchvision_transforms_on_the_same_generator_state() -> None:
    """Every image's flip, crop and erasing box equal what torchvision's transforms, run per image from
    torch's global generator in the same state, do to it (erasing always on, to draw many boxes)."""
    size, n = (64, 32), 200
    aug = TrainAugment(size, erasing_p=1.0)
    images = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = aug(images, torch.Generator().manual_seed(7))
    per_image = per_image_augment(size, erasing_p=1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        want = torch.stack([per_image(TF.to_pil_image(img)) for img in images])
    assert torch.equal(got, want)
    erased = torch.isclose(got, torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand_as(got)).all(1)
    assert 0.02 < float(erased.float().mean()) < 0.33  # rectangles filled with the mean, not zeros
    assert pad_for((256, 128)) == 10 and pad_for((64, 32)) == 2


@pytest.mark.parametrize(("workers", "rank"), [(1, 0), (2, 0), (2, 1)])
def test_memory_loader_replays_the_per_image_dataloader(synth_root: Path, workers: int, rank: int) -> None:
    """The same seed gives the same batches as the previous release's per-image loading, epoch after
    epoch, because the streams are those torch's DataLoader gives its workers (rank 1 of 2 too)."""
    data = load_dataset(synth_root)
    dist = dict(rank=rank, world_size=1 + rank)
    mine = build_train_loader(data.train, (64, 32), p=3, k=2, seed=5, num_workers=workers, **dist)
    reference = per_image_train_loader(data.train, (64, 32), 3, 2, seed=5, num_workers=workers, **dist)
    for epoch in range(3):
        mine.batch_sampler.set_epoch(epoch)
        reference.batch_sampler.set_epoch(epoch)
        pairs = list(zip(mine, reference, strict=True))  # the DataLoader draws its base seed here, once an epoch
        assert pairs
        for a, b in pairs:
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # images, pids, camids, indices


def test_augmentation_draws_depend_on_the_generator_only() -> None:
    aug = TrainAugment((64, 32))
    state = torch.get_rng_state()
    a, b = (aug.sample(8, torch.Generator().manual_seed(3)) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    assert torch.equal(torch.get_rng_state(), state)  # torchvision's draws were lent the generator
    generator = torch.Generator().manual_seed(3)
    first, second = aug.sample(4, generator), aug.sample(4, generator)
    assert torch.equal(torch.cat([first.top, second.top]), a.top)  # the generator advanced past them
    with pytest.raises(ValueError, match="uint8"):
        aug.apply(torch.zeros(8, 3, 64, 32), a)


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


@pytest.mark.parametrize("workers", [0, 2])
def test_memory_and_disk_loaders_give_the_same_batches(synth_root: Path, workers: int) -> None:
    data = load_dataset(synth_root)
    state = torch.get_rng_state()
    memory = build_train_loader(data.train, (64, 32), p=3, k=2, seed=5, num_workers=workers)
    disk = build_train_loader(data.train, (64, 32), p=3, k=2, seed=5, num_workers=workers, cache_mb=0)
    assert memory.in_memory and not disk.in_memory
    for loader in (memory, disk):
        loader.batch_sampler.set_epoch(2)
    for a, b in zip(memory, disk, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(torch.get_rng_state(), state)  # neither touches torch's global generator
    # Another epoch augments differently; the same epoch again replays exactly.
    first = next(iter(memory))
    memory.batch_sampler.set_epoch(3)
    assert not torch.equal(next(iter(memory))[0], first[0])
    memory.batch_sampler.set_epoch(2)
    assert torch.equal(next(iter(memory))[0], first[0])


def test_decoded_images_are_the_resized_files(synth_root: Path) -> None:
    data = load_dataset(synth_root)
    images = decode_images(data.train[:5], (64, 32))
    assert images.shape == (5, 3, 64, 32) and images.dtype == torch.uint8
    want = build_transforms((64, 32))(load_image(data.train[4].path))
    assert torch.equal(images[4].float() / 255, want)


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


def test_training_on_either_loader_ends_at_the_same_weights(synth_root: Path, monkeypatch) -> None:
    """Two epochs through the engine on the in-memory loader and on the per-image DataLoader end at
    the same weights to the last bit: the data path changed nothing that is trained (NCHW, CPU)."""
    data = load_dataset(synth_root)
    config = TrainConfig(epochs=2, lr=1e-3, p=3, k=2, num_workers=1, eval_every=0, warmup_epochs=0, seed=3)

    def untrained() -> ReIDNet:
        torch.manual_seed(0)
        return ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32), num_classes=data.num_train_pids))

    def trained() -> dict[str, torch.Tensor]:
        return engine.train(untrained(), data.train, config, device="cpu").model.state_dict()

    mine = trained()
    monkeypatch.setattr(
        engine,
        "_build_loader",
        lambda items, model, c, ctx: per_image_train_loader(items, (64, 32), c.p, c.k, seed=c.seed, num_workers=1),
    )
    reference = trained()
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in mine)
    assert not torch.equal(mine["backbone.conv1.weight"], untrained().backbone.conv1.weight)
