"""The accuracy-controlled methods: held-out identities, the rate controller's decisions, the shrink epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidcompress.data.datasets import load_dataset
from reidcompress.errors import DatasetError
from reidcompress.models.reid import ReIDNet
from reidcompress.prune import PruneData, PruneOptions, prune_model
from reidcompress.prune.criteria import L1Norm
from reidcompress.prune.engine import score_groups, select_channels
from reidcompress.prune.planning import kept_for_rate
from reidcompress.prune.strategies import adaptive
from reidcompress.prune.strategies.play_and_prune import Shrink


@pytest.fixture
def synth_data(synth_root: Path) -> PruneData:
    return PruneData(items=tuple(load_dataset(synth_root).train), p=4, k=2)


def test_held_out_identities_are_disjoint_from_training_and_form_a_query_gallery_split(synth_data: PruneData) -> None:
    train, val = synth_data.split_identities(0.25)
    held = {it.pid for it in val.query}
    assert len(held) == 4 and {it.pid for it in val.gallery} == held
    # Training keeps the other identities only, relabelled for the ID classifier.
    train_paths = {it.path for it in train.items}
    assert not train_paths & {it.path for it in val.query + val.gallery}
    assert len(train_paths) + len(val.query) + len(val.gallery) == len(synth_data.items)
    assert sorted({it.pid for it in train.items}) == list(range(synth_data.num_pids - 4))
    # One query per identity and camera; every query has a gallery match in another camera.
    assert len({(it.pid, it.camid) for it in val.query}) == len(val.query)
    assert all(any(g.pid == q.pid and g.camid != q.camid for g in val.gallery) for q in val.query)
    assert synth_data.split_identities(0.25)[1] == val  # deterministic
    with pytest.raises(DatasetError, match="too few"):
        synth_data.split_identities(0.9)


def test_the_controller_raises_the_rate_backs_off_and_always_lands_the_budget(
    tiny_model: ReIDNet, synth_data: PruneData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held-out mAP of: the unpruned model, then each trial. Tolerance 2 points: 49 and 48.5 pass, 40 fails
    # (its step, faster than the 4 trials need, is dropped), and the last trial goes to the full budget
    # whatever its accuracy. Trial 3 steps 0.375, the pace that two trials left need.
    scripted = iter([50.0, 49.0, 40.0, 48.5, 30.0])
    monkeypatch.setattr(adaptive, "heldout_map", lambda *a, **k: next(scripted))
    options = PruneOptions(target_flops=0.5, round_to=1, epochs=4, accuracy_tolerance=2.0)
    record = prune_model(tiny_model, "afp", options, synth_data)
    trials = record["controller"]["trials"]
    assert "controller" not in tiny_model.meta  # the strategy's record travels in its result
    assert [t["progress"] for t in trials] == [0.25, 0.75, 0.625, 1.0]
    assert [t["accepted"] for t in trials] == [True, False, True, True]
    assert [t["forced"] for t in trials] == [False, False, False, True]
    flops = [t["flops_ratio"] for t in trials]
    assert flops[0] > flops[2] > flops[3] and flops[1] < flops[2]
    assert record["target_met"] and record["flops_ratio"] == pytest.approx(flops[3])


def test_the_controller_stops_early_once_the_budget_is_reached(
    tiny_model: ReIDNet, synth_data: PruneData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adaptive, "heldout_map", lambda *a, **k: 50.0)
    options = PruneOptions(rate=0.5, round_to=1, epochs=4, accuracy_tolerance=1.0)
    record = prune_model(tiny_model, "play_and_prune", options, synth_data)
    assert [t["progress"] for t in record["controller"]["trials"]] == [0.25, 0.75, 1.0]
    assert max(record["group_rates"].values()) > 0
    # The trial the steps left unused fine-tunes the result, on every identity: the split is recorded.
    held = len({it.pid for it in synth_data.split_identities(0.2)[1].query})
    assert record["controller"]["schedule"] == {
        "pruning_epochs": 4,
        "trials_run": 3,
        "finetune_epochs": 1,
        "finetune_identities": synth_data.num_pids,
        "heldout_identities_returned": held,
    }


def test_shrink_silences_the_planned_channels_during_an_epoch(tiny_model: ReIDNet, synth_data: PruneData) -> None:
    groups = score_groups(tiny_model, L1Norm(), residual=False)
    plan = select_channels(groups, kept_for_rate(groups, 0.5))
    synth_data.fit(tiny_model, 1, [Shrink(plan, 1e-3)])
    bn = tiny_model.backbone.layer1[0].bn1
    weak = plan["backbone.layer1.0.conv1"]
    strong = sorted(set(range(bn.num_features)) - set(weak))
    with torch.no_grad():
        assert bn.weight[weak].abs().max() < 0.05 < bn.weight[strong].abs().min()


@pytest.fixture
def afp_run(synth_data: PruneData, monkeypatch: pytest.MonkeyPatch):
    """``run(finetune_epochs)`` prunes a fresh `tiny` with AFP (every trial accepted) and returns the record, the
    classifier's rows before and after, and the identities the trials held out."""
    from reidcompress.models.reid import ReIDConfig

    monkeypatch.setattr(adaptive, "heldout_map", lambda *a, **k: 50.0)
    held = sorted({it.pid for it in synth_data.split_identities(0.2)[1].query})

    def run(finetune_epochs: int) -> tuple[dict, torch.Tensor, torch.Tensor, list[int]]:
        model = ReIDNet(ReIDConfig(arch="tiny", num_classes=synth_data.num_pids, input_size=(64, 32)))
        before = model.classifier.weight.detach().clone()
        options = PruneOptions(rate=0.5, round_to=1, epochs=1, finetune_epochs=finetune_epochs)
        record = prune_model(model, "afp", options, synth_data)
        return record, before, model.classifier.weight.detach(), held

    return run


def test_trials_train_the_checkpoints_own_classifier_rows_and_it_keeps_every_identity(
    afp_run, synth_data: PruneData
) -> None:
    record, before, after, held = afp_run(0)
    assert record["controller"]["trials"][0]["accepted"]
    trained = sorted(set(range(synth_data.num_pids)) - set(held))
    assert after.shape == before.shape
    assert torch.equal(after[held], before[held]) and not torch.allclose(after[trained], before[trained])
    assert record["controller"]["schedule"]["finetune_epochs"] == 0


def test_held_out_identities_return_to_training_for_the_final_fine_tune(afp_run) -> None:
    record, before, after, held = afp_run(1)
    assert record["controller"]["schedule"]["finetune_epochs"] == 1
    # The held-out identities' classifier rows, untouched by the trials, are trained by the final epoch.
    assert not torch.allclose(after[held], before[held])
