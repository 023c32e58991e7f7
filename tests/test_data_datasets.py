"""Dataset parsers on tiny fake trees in each dataset's exact on-disk layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidcompress.data.datasets import ImageItem, list_datasets, load_dataset, register_dataset, relabel
from reidcompress.errors import DatasetError, InputError

MARKET = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0007_c3s3_077419_03.jpg",
        "0010_c6s4_002427_02.jpg",
        "Thumbs.db",
    ],
    "query": ["0003_c1s6_015971_00.jpg", "0003_c4s6_015641_00.jpg", "0005_c2s1_000976_00.jpg"],
    "bounding_box_test": [
        "-1_c1s1_000401_03.jpg",
        "0000_c1s1_000151_01.jpg",
        "0003_c2s6_016021_02.jpg",
        "0003_c1s6_015996_01.jpg",
        "0005_c5s1_001001_04.jpg",
    ],
}


def _touch_tree(root: Path, tree: dict[str, list[str]]) -> Path:
    for folder, names in tree.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / folder / n).write_bytes(b"")
    return root


def _items(ds_split: list[ImageItem]) -> list[tuple[str, int, int]]:
    return [(Path(it.path).name, it.pid, it.camid) for it in ds_split]


def test_market1501_counts_relabel_junk_distractors(tmp_path: Path) -> None:
    _touch_tree(tmp_path / "Market-1501-v15.09.15", MARKET)
    ds = load_dataset(tmp_path, "market1501")
    assert ds.name == "market1501" and ds.root.endswith("Market-1501-v15.09.15")
    # train pids 2, 7, 10 -> 0, 1, 2 in sorted order; camid = digit - 1
    assert _items(ds.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000551_01.jpg", 0, 1),
        ("0007_c3s3_077419_03.jpg", 1, 2),
        ("0010_c6s4_002427_02.jpg", 2, 5),
    ]
    assert ds.num_train_pids == 3 and ds.num_train_cams == 4
    assert {it.pid for it in ds.query} == {3, 5}  # query/gallery pids kept as on disk
    gallery = _items(ds.gallery)
    assert ("0000_c1s1_000151_01.jpg", 0, 0) in gallery  # distractor kept
    assert all(pid != -1 for _, pid, _ in gallery) and len(gallery) == 4  # junk dropped
    assert ds.summary()["gallery"] == {"ids": 3, "images": 4, "cams": 3}


def test_market_root_itself_and_alias(tmp_path: Path) -> None:
    _touch_tree(tmp_path, MARKET)
    assert len(load_dataset(tmp_path, "Market").train) == 4


def test_dukemtmcreid_subfolder_and_eight_cameras(tmp_path: Path) -> None:
    tree = {
        "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c8_f0000001.jpg", "0005_c1_f0000002.jpg"],
        "query": ["0009_c3_f0000003.jpg"],
        "bounding_box_test": ["0009_c7_f0000004.jpg", "0000_c1_f0000005.jpg"],
    }
    _touch_tree(tmp_path / "DukeMTMC-reID", tree)
    ds = load_dataset(tmp_path, "duke")
    assert ds.name == "dukemtmcreid"
    assert _items(ds.train) == [
        ("0001_c2_f0046182.jpg", 0, 1),
        ("0001_c8_f0000001.jpg", 0, 7),
        ("0005_c1_f0000002.jpg", 1, 0),
    ]
    assert [it.camid for it in ds.gallery] == [0, 6]


@pytest.mark.parametrize(("name", "kind"), [("cuhk03np", "detected"), ("cuhk03np_labeled", "labeled")])
def test_cuhk03np_detected_and_labeled(tmp_path: Path, name: str, kind: str) -> None:
    tree = {
        "bounding_box_train": ["0001_c1_1.png", "0001_c2_2.png", "0004_c1_3.png"],
        "query": ["0011_c1_1.png"],
        "bounding_box_test": ["0011_c2_4.png", "0012_c2_5.png"],
    }
    _touch_tree(tmp_path / "cuhk03-np" / kind, tree)
    other = "labeled" if kind == "detected" else "detected"
    _touch_tree(
        tmp_path / "cuhk03-np" / other, {"bounding_box_train": ["0099_c1_1.png"], "query": [], "bounding_box_test": []}
    )
    ds = load_dataset(tmp_path, name)
    assert ds.name == f"cuhk03np_{kind}"
    assert _items(ds.train) == [("0001_c1_1.png", 0, 0), ("0001_c2_2.png", 0, 1), ("0004_c1_3.png", 1, 0)]
    assert len(ds.query) == 1 and len(ds.gallery) == 2


def test_cuhk03np_camera_out_of_range(tmp_path: Path) -> None:
    tree = {"bounding_box_train": ["0001_c3_1.png"], "query": ["0002_c1_1.png"], "bounding_box_test": ["0002_c2_1.png"]}
    _touch_tree(tmp_path / "cuhk03-np" / "detected", tree)
    with pytest.raises(DatasetError, match="cameras 1..2"):
        load_dataset(tmp_path, "cuhk03np_detected")


def _msmt_tree(root: Path, version: str, train_dir: str, test_dir: str) -> Path:
    d = root / version
    lists = {
        "list_train.txt": (
            train_dir,
            [
                "0000/0000_000_01_0303morning_0015_0.jpg 0",
                "0000/0000_001_14_0303morning_0016_0.jpg 0",
                "0003/0003_000_05_0303noon_0001_1.jpg 3",
            ],
        ),
        "list_val.txt": (train_dir, ["0005/0005_002_15_0303afternoon_0002_0.jpg 5"]),
        "list_query.txt": (test_dir, ["0000/0000_000_02_0303morning_0005_0.jpg 0"]),
        "list_gallery.txt": (
            test_dir,
            ["0000/0000_001_03_0303morning_0006_0.jpg 0", "0001/0001_000_09_0303morning_0007_0.jpg 1"],
        ),
    }
    for name, (sub, lines) in lists.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("\n".join(lines) + "\n")
        for line in lines:
            img = d / sub / line.split()[0]
            img.parent.mkdir(parents=True, exist_ok=True)
            img.write_bytes(b"")
    return d


@pytest.mark.parametrize(
    ("version", "train_dir", "test_dir"),
    [("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")],
)
def test_msmt17_lists_and_val_option(tmp_path: Path, version: str, train_dir: str, test_dir: str) -> None:
    d = _msmt_tree(tmp_path, version, train_dir, test_dir)
    ds = load_dataset(tmp_path, "msmt17")
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 0), (0, 13), (1, 4)]
    assert ds.train[0].path == str(d / train_dir / "0000/0000_000_01_0303morning_0015_0.jpg")
    assert [(it.pid, it.camid) for it in ds.gallery] == [(0, 2), (1, 8)]
    assert ds.query[0].path.startswith(str(d / test_dir))
    with_val = load_dataset(d, "msmt", include_val=True)  # the version folder itself works too
    assert [(it.pid, it.camid) for it in with_val.train] == [(0, 0), (0, 13), (1, 4), (2, 14)]


def test_msmt17_bad_line_and_missing_images(tmp_path: Path) -> None:
    d = _msmt_tree(tmp_path, "MSMT17_V1", "train", "test")
    (d / "list_query.txt").write_text("0000/0000_000_02_0303morning_0005_0.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt:1: expected 'PATH PID'"):
        load_dataset(tmp_path, "msmt17")
    (d / "list_query.txt").write_text("9999/9999_000_02_0303morning_0005_0.jpg 9999\n")
    with pytest.raises(DatasetError, match="first listed image not found"):
        load_dataset(tmp_path, "msmt17")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "market1501",
            r"not a Market-1501 folder: expected bounding_box_train/, query/, bounding_box_test/.*"
            r"0002_c1s1_000451_03.jpg",
        ),
        ("dukemtmcreid", r"not a DukeMTMC-reID folder.*DukeMTMC-reID/"),
        ("cuhk03np_labeled", r"not a CUHK03-NP \(labeled\) folder.*cuhk03-np/labeled/"),
        ("msmt17", r"not an MSMT17 folder: expected MSMT17_V1/ with train/, test/"),
    ],
)
def test_wrong_folder_one_clear_error(tmp_path: Path, name: str, expected: str) -> None:
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DatasetError, match=expected):
        load_dataset(tmp_path, name)


def test_empty_split_and_bad_names(tmp_path: Path) -> None:
    _touch_tree(
        tmp_path,
        {
            "bounding_box_train": [],
            "query": ["0001_c1s1_000001_00.jpg"],
            "bounding_box_test": ["0001_c2s1_000001_00.jpg"],
        },
    )
    with pytest.raises(DatasetError, match="bounding_box_train: no Market-1501 images"):
        load_dataset(tmp_path)
    (tmp_path / "bounding_box_train" / "person.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="person.jpg: unexpected image name.*0002_c1s1_000451_03.jpg"):
        load_dataset(tmp_path)
    (tmp_path / "bounding_box_train" / "person.jpg").unlink()
    (tmp_path / "bounding_box_train" / "0001_c7s1_000001_00.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="cameras 1..6, got pid 1, camera 7"):
        load_dataset(tmp_path)


def test_missing_root_and_unknown_name_or_option(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown dataset 'viper'; valid names: .*market1501.*msmt17"):
        load_dataset(tmp_path, "viper")
    _touch_tree(tmp_path, MARKET)
    with pytest.raises(InputError, match="include_val"):
        load_dataset(tmp_path, "market1501", include_val=True)


def test_registry() -> None:
    assert list_datasets() == ["cuhk03np_detected", "cuhk03np_labeled", "dukemtmcreid", "market1501", "msmt17"]
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("market")(lambda root: None)  # an alias is taken too


def test_relabel_sorted() -> None:
    items = [ImageItem("a", 40, 0), ImageItem("b", 7, 1), ImageItem("c", 40, 2)]
    assert [it.pid for it in relabel(items)] == [1, 0, 1]
