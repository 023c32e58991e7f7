"""Feature extraction, the feature cache and `reidcompress evaluate` on a synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.data.datasets import load_dataset
from reidcompress.evaluation.cache import FeatureCache
from reidcompress.evaluation.features import evaluate_embedder, extract_features
from reidcompress.models.checkpoint import save_model
from reidcompress.runtime import load_embedder

runner = CliRunner()


@pytest.fixture
def model_path(tiny_model, tmp_path):
    return save_model(tmp_path / "tiny.pt", tiny_model)


def test_extract_features_in_order_with_flip(model_path, synth_root) -> None:
    ds = load_dataset(synth_root)
    emb = load_embedder(model_path)
    items = ds.query[:5]
    feats = extract_features(emb, items, batch_size=2, progress=False)
    one = extract_features(emb, items[3:4], progress=False)
    assert feats.shape == (5, 128) and np.allclose(feats[3], one[0], atol=1e-5)
    flipped = extract_features(emb, items, batch_size=2, flip=True, progress=False)
    assert not np.allclose(flipped, feats)


class _Counting:
    def __init__(self, embedder):
        self.inner, self.calls = embedder, 0
        self.source_path, self.input_size = embedder.source_path, embedder.input_size

    def describe(self):
        return self.inner.describe()

    def embed(self, batch):
        self.calls += 1
        return self.inner.embed(batch)


def test_cache_hit_miss_and_corruption(model_path, synth_root, tmp_path) -> None:
    ds = load_dataset(synth_root)
    cache = FeatureCache(tmp_path / "cache")
    emb = _Counting(load_embedder(model_path))
    first = evaluate_embedder(emb, ds, cache=cache, progress=False)
    calls = emb.calls
    assert calls > 0 and len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert evaluate_embedder(emb, ds, cache=cache, progress=False) == first
    assert emb.calls == calls  # hit: nothing re-extracted
    for npy in (tmp_path / "cache").glob("*.npy"):
        npy.write_bytes(npy.read_bytes()[:-16])  # corrupt every entry
    assert evaluate_embedder(emb, ds, cache=cache, progress=False) == first
    assert emb.calls == 2 * calls  # corruption detected and rebuilt
    # Valid JSON of the wrong shape in the description is corruption too.
    for text in ("null", "[]", '"x"', '{"sha256": null, "shape": null}'):
        for meta in (tmp_path / "cache").glob("*.json"):
            meta.write_text(text)
        done = emb.calls
        assert evaluate_embedder(emb, ds, cache=cache, progress=False) == first
        assert emb.calls == done + calls
    # A different file list (a subset) is a miss, not a stale hit.
    sub = type(ds)(ds.name, ds.root, ds.train, ds.query[:3], ds.gallery)
    evaluate_embedder(emb, sub, cache=cache, progress=False)
    assert emb.calls > 2 * calls


def test_evaluate_cli_json_and_rerank(model_path, synth_root, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REIDCOMPRESS_CACHE", str(tmp_path / "c"))
    res = runner.invoke(app, ["evaluate", str(model_path), "--data", str(synth_root), "--json", "--rerank"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"rank1", "rank5", "rank10", "mAP", "mINP"} <= set(out)
    assert 0 <= out["rank1"] <= out["rank5"] <= out["rank10"] <= 100
    assert 0 <= out["rerank"]["mAP"] <= 100


def test_evaluate_cli_bad_inputs(model_path, tmp_path) -> None:
    res = runner.invoke(app, ["evaluate", str(model_path), "--data", str(tmp_path)])
    assert res.exit_code == 2 and "Market-1501" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path / "x.pt"), "--data", str(tmp_path)])
    assert res.exit_code == 2
