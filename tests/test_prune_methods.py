"""Every method end to end: FLOPs target, embedding size, checkpoint round trip, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidcompress.data.datasets import load_dataset
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.summary import conv_widths, count_flops
from reidcompress.prune import PruneData, PruneOptions, prune_checkpoint, prune_model
from reidcompress.prune.criteria import GeometricMedian
from reidcompress.prune.engine import apply_plan
from reidcompress.prune.registry import get_method, list_methods
from reidcompress.prune.strategies.soft import SoftPruning, exponential_schedule

WEIGHT_ONLY = ["hao_li", "fpgm", "redundant_channels"]
DATA_DRIVEN = ["molchanov", "entropy", "thinet", "channel_pruning"]
TRAINING = ["fpgm_soft", "auto_balanced", "psfp", "afp", "play_and_prune"]


@pytest.fixture
def synth_data(synth_root: Path) -> PruneData:
    return PruneData(items=tuple(load_dataset(synth_root).train), p=4, k=2)


def test_every_registered_method_is_tested() -> None:
    assert sorted(list_methods()) == sorted(WEIGHT_ONLY + DATA_DRIVEN + TRAINING)


def onnx_matches(model: ReIDNet, path: Path) -> float:
    """Export with the dynamo exporter (dynamic batch) and return max |ORT - torch| at batch 3."""
    import onnxruntime as ort

    h, w = model.config.input_size
    x = torch.rand(3, 3, h, w)
    torch.onnx.export(
        model.eval(), (torch.rand(2, 3, h, w),), str(path), dynamo=True, external_data=False,
        input_names=["images"], output_names=["embeddings"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=64)}},
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    return float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))


def check_pruned(model: ReIDNet, out: Path, record: dict, target: float, dim: int) -> None:
    """The done-criteria of a pruned model: FLOPs on target, embedding kept, reload identical, ONNX parity."""
    h, w = model.config.input_size
    assert abs(record["flops_after"] / record["flops_before"] - target) <= 0.02 * target
    assert record["flops_after"] == count_flops(model, (h, w)) and record["params_after"] < record["params_before"]
    assert model.embedding_dim == dim == record["embedding_dim"]
    save_model(out, model, pruning=record)
    reloaded = load_model(out)
    assert reloaded.pruning["conv_widths"] == conv_widths(reloaded) == record["conv_widths"]
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model.eval()(x))
    assert onnx_matches(reloaded, out.with_suffix(".onnx")) < 1e-4


@pytest.mark.parametrize("method", WEIGHT_ONLY)
def test_weight_only_methods_on_tiny(tiny_model: ReIDNet, tmp_path: Path, method: str) -> None:
    record = prune_model(tiny_model, method, PruneOptions(target_flops=0.5, round_to=1))
    assert record["method"] == method and record["target_met"]
    check_pruned(tiny_model, tmp_path / "p.pt", record, 0.5, 128)


@pytest.mark.parametrize("method", DATA_DRIVEN)
def test_data_driven_methods_on_tiny(tiny_model: ReIDNet, synth_data: PruneData, tmp_path: Path, method: str) -> None:
    record = prune_model(tiny_model, method, PruneOptions(target_flops=0.5, round_to=1, calib_batches=2), synth_data)
    check_pruned(tiny_model, tmp_path / "p.pt", record, 0.5, 128)


@pytest.mark.parametrize("method", TRAINING)
def test_training_time_methods_on_tiny(tiny_model: ReIDNet, synth_data: PruneData, tmp_path: Path, method: str) -> None:
    # The accuracy-controlled methods' steps are tested in test_prune_adaptive: one step is enough here.
    epochs = 1 if get_method(method).strategy.startswith("adaptive") else 2
    options = PruneOptions(target_flops=0.5, round_to=1, epochs=epochs, finetune_epochs=1)
    record = prune_model(tiny_model, method, options, synth_data)
    assert record["epochs"] == epochs and tiny_model.classifier.out_features == synth_data.num_pids
    check_pruned(tiny_model, tmp_path / "p.pt", record, 0.5, 128)


def test_soft_pruning_in_training_ends_with_a_lossless_removal(tiny_model: ReIDNet, synth_data: PruneData) -> None:
    options = PruneOptions(rate=0.5, round_to=1, residual=True, epochs=3)
    callback = SoftPruning(GeometricMedian(), options, synth_data, exponential_schedule(5.5), 0)
    synth_data.fit(tiny_model, 3, [callback])
    assert sum(map(len, callback.plan.values())) > 0
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        before = tiny_model(x)
        apply_plan(tiny_model, callback.plan)
        torch.testing.assert_close(tiny_model(x), before, rtol=1e-5, atol=1e-5)


def test_hao_li_resnet50_full_size(tmp_path: Path) -> None:
    src = save_model(tmp_path / "r50.pt", ReIDNet(ReIDConfig(arch="resnet50", num_classes=16)))
    res = prune_checkpoint(src, tmp_path / "r50p.pt", "hao_li", PruneOptions(target_flops=0.5))
    model = load_model(tmp_path / "r50p.pt")
    assert all(w % 8 == 0 for w in res["conv_widths"].values())
    check_pruned(model, tmp_path / "again.pt", model.pruning, 0.5, 2048)


def test_iterative_steps_reach_the_one_shot_widths(tiny_model: ReIDNet) -> None:
    import copy

    other = copy.deepcopy(tiny_model)
    once = prune_model(tiny_model, "hao_li", PruneOptions(rate=0.5, round_to=2))
    thrice = prune_model(other, "hao_li", PruneOptions(rate=0.5, round_to=2, steps=3))
    assert thrice["conv_widths"] == once["conv_widths"] and thrice["steps"] == 3
    by_flops = prune_model(copy.deepcopy(other), "fpgm", PruneOptions(target_flops=0.8, round_to=1, steps=2))
    assert by_flops["target_met"]


def test_a_second_pruning_keeps_the_first_record(tiny_model: ReIDNet) -> None:
    prune_model(tiny_model, "hao_li", PruneOptions(rate=0.25, round_to=1))
    record = prune_model(tiny_model, "fpgm", PruneOptions(rate=0.25, round_to=1))
    assert record["previous"]["method"] == "hao_li"
    assert get_method("fpgm").paper in record["paper"]


FULL_SIZE = ["resnet18", "resnet34", "resnet50"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", FULL_SIZE)
@pytest.mark.parametrize("method", WEIGHT_ONLY)
@pytest.mark.parametrize(("scope", "residual"), [("local", False), ("global", True)])
def test_full_size_weight_only_matrix(tmp_path: Path, arch: str, method: str, scope: str, residual: bool) -> None:
    model = ReIDNet(ReIDConfig(arch=arch, num_classes=16))
    dim = model.embedding_dim
    record = prune_model(model, method, PruneOptions(target_flops=0.5, scope=scope, residual=residual))
    assert all(w % 8 == 0 for name, w in record["conv_widths"].items() if name != "backbone.conv1")
    check_pruned(model, tmp_path / "p.pt", record, 0.5, dim)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FULL_SIZE)
@pytest.mark.parametrize("method", DATA_DRIVEN + TRAINING)
def test_full_size_data_matrix(synth_data: PruneData, tmp_path: Path, arch: str, method: str) -> None:
    # Full-size networks at 256x128 (the synthetic 64x32 images are resized); one training epoch is
    # enough to exercise the training-time strategies' surgery.
    model = ReIDNet(ReIDConfig(arch=arch, num_classes=synth_data.num_pids))
    dim = model.embedding_dim
    options = PruneOptions(target_flops=0.5, calib_batches=1, epochs=1 if method in TRAINING else 0)
    record = prune_model(model, method, options, synth_data)
    check_pruned(model, tmp_path / "p.pt", record, 0.5, dim)
