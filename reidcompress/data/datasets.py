"""Person ReID datasets on disk: Market-1501, DukeMTMC-reID, CUHK03-NP and MSMT17.

Every parser returns a :class:`ReIDDataset` of :class:`ImageItem` (path, person id, 0-based camera id),
following the layouts and conventions of torchreid and fast-reid: junk images (pid -1) are dropped
everywhere, distractors (pid 0) stay in the gallery as non-matches, train ids are relabelled 0..N-1 in
sorted order and query/gallery ids are kept as they are on disk.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reidcompress.errors import DatasetError, InputError

__all__ = [
    "ImageItem",
    "ReIDDataset",
    "IMAGE_SUFFIXES",
    "register_dataset",
    "list_datasets",
    "load_dataset",
    "relabel",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Market-style names: `0002_c1s1_000451_03.jpg`, `-1_c3s2_000123_01.jpg`, CUHK03-NP `0001_c1_1.png`.
_MARKET_NAME = re.compile(r"^([-\d]+)_c(\d)")
_MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")


@dataclass(frozen=True)
class ImageItem:
    """One image: its path, person id and 0-based camera id."""

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReIDDataset:
    """A train/query/gallery split; train pids are 0..num_train_pids-1."""

    name: str
    root: str
    train: list[ImageItem]
    query: list[ImageItem]
    gallery: list[ImageItem]

    @property
    def num_train_pids(self) -> int:
        return len({it.pid for it in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({it.camid for it in self.train})

    def summary(self) -> dict[str, dict[str, int]]:
        """Identities, images and cameras of each split."""
        return {
            split: {
                "ids": len({it.pid for it in items}),
                "images": len(items),
                "cams": len({it.camid for it in items}),
            }
            for split, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))
        }


Parser = Callable[..., ReIDDataset]
_DATASETS: dict[str, Parser] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(name: str, *aliases: str) -> Callable[[Parser], Parser]:
    """Register ``fn(root, **options) -> ReIDDataset`` under ``name`` (and optional aliases)."""

    def deco(fn: Parser) -> Parser:
        for key in (name, *aliases):
            if key in _DATASETS or key in _ALIASES:
                raise ValueError(f"dataset {key!r} is already registered")
        _DATASETS[name] = fn
        _ALIASES.update(dict.fromkeys(aliases, name))
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names (aliases not included)."""
    return sorted(_DATASETS)


def load_dataset(root: str | os.PathLike[str], name: str = "market1501", **options: object) -> ReIDDataset:
    """Parse the dataset ``name`` found at ``root``.

    Args:
        root: The dataset folder, or a folder holding it under its usual name (e.g. ``Market-1501-v15.09.15``).
        name: A name from :func:`list_datasets` or an alias (``market``, ``duke``, ``cuhk03np``, ``msmt``...).
        **options: Parser options; ``msmt17`` takes ``include_val`` (add ``list_val.txt`` to train, which
            torchreid does only under ``combineall``; off by default, as in the published protocol).

    Raises:
        InputError: Unknown dataset name or parser option.
        DatasetError: The folder does not hold that dataset, or a split is empty.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        valid = ", ".join(list_datasets() + sorted(_ALIASES))
        raise InputError(f"unknown dataset {name!r}; valid names: {valid}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    parser = _DATASETS[key]
    try:
        inspect.signature(parser).bind(root, **options)
    except TypeError as e:
        raise InputError(f"dataset {key}: {e}") from None
    return parser(root, **options)


def relabel(items: Iterable[ImageItem]) -> list[ImageItem]:
    """Map pids to 0..N-1 in sorted order (what the ID classifier trains on)."""
    items = list(items)
    mapping = {pid: i for i, pid in enumerate(sorted({it.pid for it in items}))}
    return [ImageItem(it.path, mapping[it.pid], it.camid) for it in items]


# --------------------------------------------------------------------------------------------- Market-style


@dataclass(frozen=True)
class _MarketLayout:
    title: str
    subdirs: tuple[str, ...]  # where the three split folders may sit, relative to the given root
    num_cams: int
    example: str


def _find_market_dir(root: Path, layout: _MarketLayout) -> Path:
    for sub in layout.subdirs:
        d = root / sub if sub else root
        if all((d / s).is_dir() for s in _MARKET_SPLITS):
            return d
    where = ", ".join(f"{sub}/" for sub in layout.subdirs if sub)
    raise DatasetError(
        f"{root}: not a {layout.title} folder: expected bounding_box_train/, query/, bounding_box_test/ "
        f"(in the folder itself{' or in ' + where if where else ''}) with images named like {layout.example}"
    )


def _parse_market_split(folder: Path, layout: _MarketLayout) -> list[ImageItem]:
    items = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # Thumbs.db and the like
        m = _MARKET_NAME.match(p.name)
        if m is None:
            raise DatasetError(f"{p}: unexpected image name in a {layout.title} folder; expected like {layout.example}")
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue  # junk detections: dropped everywhere
        if pid < 0 or not 1 <= cam <= layout.num_cams:
            raise DatasetError(
                f"{p}: {layout.title} has person ids >= 0 (-1 = junk) and cameras 1..{layout.num_cams}, "
                f"got pid {pid}, camera {cam}"
            )
        items.append(ImageItem(str(p), pid, cam - 1))
    if not items:
        raise DatasetError(f"{folder}: no {layout.title} images (expected files named like {layout.example})")
    return items


def _load_market_style(root: Path, name: str, layout: _MarketLayout) -> ReIDDataset:
    d = _find_market_dir(root, layout)
    train, query, gallery = (_parse_market_split(d / s, layout) for s in _MARKET_SPLITS)
    return ReIDDataset(name, str(d), relabel(train), query, gallery)


_MARKET = _MarketLayout(
    "Market-1501",
    ("", "Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15"),
    6,
    "0002_c1s1_000451_03.jpg",
)
_DUKE = _MarketLayout("DukeMTMC-reID", ("", "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID"), 8, "0001_c2_f0046182.jpg")


@register_dataset("market1501", "market", "market-1501")
def market1501(root: Path) -> ReIDDataset:
    """Market-1501 (Zheng et al., ICCV 2015): 6 cameras, 751 train / 750 test ids."""
    return _load_market_style(root, "market1501", _MARKET)


@register_dataset("dukemtmcreid", "duke", "dukemtmc", "dukemtmc-reid")
def dukemtmcreid(root: Path) -> ReIDDataset:
    """DukeMTMC-reID (Zheng et al., ICCV 2017): 8 cameras, 702 train / 1,110 test ids (408 distractors)."""
    return _load_market_style(root, "dukemtmcreid", _DUKE)


def _cuhk03np_layout(kind: str) -> _MarketLayout:
    return _MarketLayout(
        f"CUHK03-NP ({kind})",
        (f"cuhk03-np/{kind}", kind, "", f"cuhk03/cuhk03-np/{kind}"),
        2,
        "0001_c1_1.png",
    )


@register_dataset("cuhk03np_detected", "cuhk03np", "cuhk03-np", "cuhk03np-detected")
def cuhk03np_detected(root: Path) -> ReIDDataset:
    """CUHK03-NP detected boxes, the 767/700 new protocol (Zhong et al., CVPR 2017) in Market-style folders."""
    return _load_market_style(root, "cuhk03np_detected", _cuhk03np_layout("detected"))


@register_dataset("cuhk03np_labeled", "cuhk03np-labeled")
def cuhk03np_labeled(root: Path) -> ReIDDataset:
    """CUHK03-NP hand-labelled boxes, the 767/700 new protocol in Market-style folders."""
    return _load_market_style(root, "cuhk03np_labeled", _cuhk03np_layout("labeled"))


# --------------------------------------------------------------------------------------------------- MSMT17

_MSMT_VERSIONS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
_MSMT_CAMS = 15
_MSMT_LISTS = ("list_train.txt", "list_query.txt", "list_gallery.txt")


def _find_msmt_dir(root: Path) -> tuple[Path, str, str]:
    for version, (train_dir, test_dir) in _MSMT_VERSIONS.items():
        for d in (root / version, root / "msmt17" / version, root):
            if d.name == version and (d / train_dir).is_dir() and (d / test_dir).is_dir():
                return d, train_dir, test_dir
    raise DatasetError(
        f"{root}: not an MSMT17 folder: expected MSMT17_V1/ with train/, test/ or MSMT17_V2/ with "
        f"mask_train_v2/, mask_test_v2/, each beside {', '.join(_MSMT_LISTS)} (and list_val.txt) "
        "whose lines look like '0000/0000_000_01_0303morning_0015_0.jpg 0'"
    )


def _parse_msmt_list(list_path: Path, image_dir: Path) -> list[ImageItem]:
    if not list_path.is_file():
        raise DatasetError(f"MSMT17 list file not found: {list_path}")
    items = []
    for n, line in enumerate(list_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel, pid_text = line.split()
            pid, cam = int(pid_text), int(Path(rel).name.split("_")[2])
        except (ValueError, IndexError):
            raise DatasetError(
                f"{list_path}:{n}: expected 'PATH PID' like '0000/0000_000_01_0303morning_0015_0.jpg 0', got {line!r}"
            ) from None
        if pid < 0 or not 1 <= cam <= _MSMT_CAMS:
            raise DatasetError(f"{list_path}:{n}: MSMT17 has pids >= 0 and cameras 1..15, got pid {pid}, camera {cam}")
        items.append(ImageItem(str(image_dir / rel), pid, cam - 1))
    if not items:
        raise DatasetError(f"{list_path}: empty MSMT17 list")
    # Checking every one of ~126k files would be slow; the first entry catches a wrong image folder.
    if not Path(items[0].path).is_file():
        raise DatasetError(f"{list_path}: first listed image not found: {items[0].path}")
    return items


@register_dataset("msmt17", "msmt", "msmt17_v1", "msmt17_v2")
def msmt17(root: Path, include_val: bool = False) -> ReIDDataset:
    """MSMT17 (Wei et al., CVPR 2018), V1 or V2 (faces masked): 15 cameras, 1,041 train / 3,060 test ids.

    Args:
        root: The folder holding ``MSMT17_V1`` or ``MSMT17_V2`` (or that folder itself).
        include_val: Add ``list_val.txt`` to train (32,621 images instead of 30,248); torchreid does so
            only under ``combineall``. Off by default, as in the published protocol.
    """
    d, train_dir, test_dir = _find_msmt_dir(root)
    train = _parse_msmt_list(d / "list_train.txt", d / train_dir)
    if include_val:
        train += _parse_msmt_list(d / "list_val.txt", d / train_dir)
    query = _parse_msmt_list(d / "list_query.txt", d / test_dir)
    gallery = _parse_msmt_list(d / "list_gallery.txt", d / test_dir)
    return ReIDDataset("msmt17", str(d), relabel(train), query, gallery)
