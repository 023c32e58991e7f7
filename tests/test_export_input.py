"""``export --input normalized``: a graph for trackers that feed ImageNet-normalised crops (boxmot)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.evaluation.features import evaluate_model
from reidcompress.export.calibration import reference_images
from reidcompress.export.onnx import read_metadata
from reidcompress.export.quantize import quantize_onnx
from reidcompress.models.checkpoint import save_model
from reidcompress.models.reid import IMAGENET_MEAN, IMAGENET_STD

runner = CliRunner()


@pytest.fixture(scope="module")
def both(tmp_path_factory, synth_root):
    """(checkpoint, default export, --input normalized export) of a tiny model."""
    from reidcompress.models.reid import ReIDConfig, ReIDNet

    tmp = tmp_path_factory.mktemp("input")
    ckpt = save_model(tmp / "tiny.pt", ReIDNet(ReIDConfig(arch="tiny", input_size=(64, 32))).eval())
    for name, extra in (("unit.onnx", []), ("norm.onnx", ["--input", "normalized"])):
        res = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp / name), "--data", str(synth_root), *extra])
        assert res.exit_code == 0, res.output
    return ckpt, tmp / "unit.onnx", tmp / "norm.onnx"


def _raw(path, x: np.ndarray) -> np.ndarray:
    """The graph's output for exactly ``x``, bypassing reidcompress's backends."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_normalized_graph_fed_normalised_crops_matches_default_fed_unit_crops(both, synth_root) -> None:
    _, unit, norm = both
    crops = reference_images((64, 32), synth_root)  # decoded person crops in [0, 1]
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    tracker_input = ((crops - mean) / std).astype(np.float32)  # what boxmot's ONNX backend feeds
    a, b = _raw(unit, crops), _raw(norm, tracker_input)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    # The double normalisation of fast-reid #147 is a different embedding: the test can tell them apart.
    twice = _raw(unit, tracker_input)
    assert ((a * twice).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(twice, axis=1)).min() < 0.999


def test_metadata_records_the_choice(both) -> None:
    _, unit, norm = both
    assert read_metadata(unit)["input_format"] == "unit"
    meta = read_metadata(norm)
    assert meta["input_format"] == "normalized" and "normalised" in meta["input"]


def test_evaluate_and_verify_feed_the_right_input(both, synth_root) -> None:
    ckpt, unit, norm = both
    on_pt = evaluate_model(ckpt, synth_root, use_cache=False, progress=False)
    on_norm = evaluate_model(norm, synth_root, use_cache=False, progress=False)
    assert on_norm["rank1"] == on_pt["rank1"] and on_norm["mAP"] == pytest.approx(on_pt["mAP"], abs=1e-6)
    args = ["verify", "--reference", str(ckpt), "--candidate", str(norm), "--data", str(synth_root)]
    res = runner.invoke(app, [*args, "--min-cosine", "0.9999", "--latency-runs", "2", "--no-cache", "--json"])
    assert res.exit_code == 0, res.output  # per-image cosine to the PyTorch model >= 0.9999


def test_int8_of_a_normalized_graph_calibrates_on_normalised_images(both, synth_root, tmp_path) -> None:
    _, _, norm = both
    crops = reference_images((64, 32), synth_root)
    res = quantize_onnx(norm, tmp_path / "norm.int8.onnx", [crops], parity_images=crops, min_cosine=0.98)
    assert res.parity is not None and res.parity.passed
    assert read_metadata(res.path)["input_format"] == "normalized"


def test_unknown_input_format_is_refused_before_writing(tmp_path, both) -> None:
    ckpt, _, _ = both
    res = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--input", "bgr"])
    assert res.exit_code == 2 and "error: --input must be one of unit, normalized" in res.output, res.output
    assert not (tmp_path / "x.onnx").exists()
