"""The synthetic generator: exact Market-1501 layout, protocol properties, determinism, styles, CLI."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.data.datasets import load_dataset
from reidcompress.data.synth import list_styles, synthesize
from reidcompress.errors import InputError

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SMALL = {"ids": 4, "cams": 2, "images_per_id": 4, "size": (32, 16)}


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_exact_market_layout_and_names(synth_root: Path) -> None:
    info = json.loads((synth_root / "synth.json").read_text())
    assert sorted(p.name for p in synth_root.iterdir()) == [
        "bounding_box_test",
        "bounding_box_train",
        "query",
        "synth.json",
    ]
    raw: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        files = sorted((synth_root / split).iterdir())
        assert len(files) == info["images"][split]
        for f in files:
            m = NAME.match(f.name)
            assert m, f.name
            raw[split].append((int(m.group(1)), int(m.group(2))))
    with Image.open(next((synth_root / "query").iterdir())) as im:
        assert im.format == "JPEG" and im.size == (32, 64)
    train_ids = {pid for pid, _ in raw["bounding_box_train"]}
    test_ids = {pid for pid, _ in raw["query"]}
    assert train_ids == set(info["train_ids"]) and test_ids == set(info["test_ids"])
    assert len(train_ids) == len(test_ids) == 6 and not train_ids & test_ids
    gallery_ids = {pid for pid, _ in raw["bounding_box_test"]}
    assert {-1, 0} <= gallery_ids and gallery_ids - {-1, 0} == test_ids  # junk and distractors, as Market
    assert all(pid > 0 for pid, _ in raw["bounding_box_train"] + raw["query"])
    assert {cam for _, cam in raw["bounding_box_train"] + raw["bounding_box_test"]} == {1, 2, 3}


def test_query_protocol(synth_root: Path) -> None:
    ds = load_dataset(synth_root)
    assert ds.num_train_pids == 6 and sorted({it.pid for it in ds.train}) == list(range(6))
    assert not {it.path for it in ds.query} & {it.path for it in ds.gallery}
    per_id_cams = defaultdict(list)
    for q in ds.query:
        per_id_cams[q.pid].append(q.camid)
        # every query keeps a true match in another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    gallery_cams = defaultdict(set)
    for g in ds.gallery:
        gallery_cams[g.pid].add(g.camid)
    for pid, cams in per_id_cams.items():
        assert sorted(cams) == sorted(gallery_cams[pid])  # one query per camera the id appears in
    assert any(g.pid == 0 for g in ds.gallery)


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", seed=5, **SMALL)
    synthesize(tmp_path / "b", seed=5, **SMALL)
    synthesize(tmp_path / "c", seed=6, **SMALL)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary folders left


def test_query_per_id_and_counts(tmp_path: Path) -> None:
    info = synthesize(tmp_path / "d", ids=6, cams=4, images_per_id=10, seed=0, size=(32, 16), query_per_id=1)
    ds = load_dataset(tmp_path / "d")
    assert len(ds.query) == info["images"]["query"] == 3
    assert len(ds.train) == 3 * 10 and info["images"]["bounding_box_train"] == 30
    assert len(ds.gallery) + info["junk_images"] == info["images"]["bounding_box_test"]


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"cams": 7}, r"cameras must be 2..6"),
        ({"ids": 1}, r"at least 2 identities"),
        ({"images_per_id": 3}, r"at least 4 images per identity"),
        ({"size": (8, 16)}, r"at least 16x16"),
        ({"query_per_id": 0}, r"must be >= 1"),
        ({"style": "noon"}, r"unknown synthetic style 'noon'; valid styles: source, target"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path: Path, kwargs: dict, msg: str) -> None:
    args = {**SMALL, "seed": 0, **kwargs}
    with pytest.raises(InputError, match=msg):
        synthesize(tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_folders_and_overwrites_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        synthesize(foreign, seed=0, **SMALL)
    with pytest.raises(InputError, match="not a synthetic dataset"):
        synthesize(foreign, seed=0, overwrite=True, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "own"
    out.mkdir()  # an empty folder is fine
    synthesize(out, seed=0, **SMALL)
    with pytest.raises(InputError, match="not empty"):
        synthesize(out, seed=1, **SMALL)
    synthesize(out, seed=1, overwrite=True, **SMALL)
    assert json.loads((out / "synth.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "own"]


def _raw(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32).ravel() / 255


def test_cross_camera_matching_is_not_a_pixel_comparison(synth_root: Path) -> None:
    """Same person across cameras is farther apart in raw pixels than different people in one camera."""
    items = load_dataset(synth_root).train
    x = np.stack([_raw(it.path) for it in items])
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    pid = np.array([it.pid for it in items])
    cam = np.array([it.camid for it in items])
    same_id_other_cam = (pid[:, None] == pid[None]) & (cam[:, None] != cam[None])
    other_id_same_cam = (pid[:, None] != pid[None]) & (cam[:, None] == cam[None])
    assert d[same_id_other_cam].mean() > d[other_id_same_cam].mean()


def test_styles_are_different_domains(synth_root: Path, synth_target_root: Path) -> None:
    assert {"source", "target"} <= set(list_styles())

    def stats(root: Path) -> tuple[float, float]:
        x = np.stack([_raw(it.path) for it in load_dataset(root).train])
        return float(x.mean()), float(x.std())

    src, tgt = stats(synth_root), stats(synth_target_root)
    assert tgt[0] < 0.8 * src[0]  # night and overcast: darker
    assert tgt[1] < src[1]  # and lower contrast


def test_cli_synth_and_info(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["data", "synth", str(out), "--ids", "4", "--cams", "2", "--images-per-id", "4", "--size", "32x16"]
    res = runner.invoke(app, [*args, "--seed", "3", "--style", "target", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["style"] == "target" and info["seed"] == 3 and info["size"] == [32, 16]
    assert info["images"]["bounding_box_train"] == 8 and info["seconds"] > 0
    res = runner.invoke(app, ["data", "info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["name"] == "market1501" and summary["train"] == {"ids": 2, "images": 8, "cams": 2}
    res = runner.invoke(app, [*args, "--json"])  # out exists now
    assert res.exit_code == 2 and "error: output folder is not empty" in res.output
    res = runner.invoke(app, ["data", "info", str(tmp_path), "--dataset", "duke"])
    assert res.exit_code == 2 and "not a DukeMTMC-reID folder" in res.output


def test_dataset_folder_gets_the_umask_mode_not_mkdtemps_0700(tmp_path) -> None:
    import os
    import stat

    from reidcompress.data.synth import synthesize

    old = os.umask(0o022)
    try:
        synthesize(tmp_path / "s", ids=4, cams=2, images_per_id=4, seed=0, size=(32, 16))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o755
