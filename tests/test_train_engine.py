from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from reidcompress.errors import DatasetError, InputError
from reidcompress.models.checkpoint import load_model, load_raw
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.train import Callback, TrainConfig, engine
from reidcompress.train._optim import lr_factor

N_IDS, BATCHES = 6, 2


class _MemoryLoader:
    """P x K batches of noisy per-identity prototypes, drawn from the torch RNG (which train() seeds)."""

    def __init__(self, p: int, k: int) -> None:
        g = torch.Generator().manual_seed(123)
        self.protos = torch.rand(N_IDS, 3, 64, 32, generator=g)
        self.p, self.k = p, k
        self.epochs_set: list[int] = []
        self.batch_sampler = SimpleNamespace(set_epoch=self.epochs_set.append)

    def __len__(self) -> int:
        return BATCHES

    def __iter__(self):
        for _ in range(BATCHES):
            ids = torch.randperm(N_IDS)[: self.p].repeat_interleave(self.k)
            imgs = (self.protos[ids] + 0.1 * torch.randn(len(ids), 3, 64, 32)).clamp(0, 1)
            yield imgs, ids, torch.zeros_like(ids), torch.arange(len(ids))


@pytest.fixture
def memory_loader(monkeypatch: pytest.MonkeyPatch) -> list[_MemoryLoader]:
    made: list[_MemoryLoader] = []

    def build(items, model, config, ctx):
        made.append(_MemoryLoader(config.p, config.k))
        return made[-1]

    monkeypatch.setattr(engine, "_build_loader", build)
    return made


ITEMS = [SimpleNamespace(path="", pid=i // 3, camid=0) for i in range(N_IDS * 3)]


def _model(seed: int = 0) -> ReIDNet:
    torch.manual_seed(seed)
    return ReIDNet(ReIDConfig(arch="tiny", num_classes=N_IDS, input_size=(64, 32)))


def _config(**kw) -> TrainConfig:
    base = dict(epochs=2, p=3, k=2, warmup_epochs=1, milestones=(1,), eval_every=0, num_workers=0, seed=7)
    return TrainConfig(**{**base, **kw})


class _Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_start(self, trainer):
        self.calls.append(("train_start",))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_batch_start(self, trainer, step, batch):
        assert batch[0].shape == (6, 3, 64, 32)
        self.calls.append(("batch_start", step))

    def extra_loss(self, trainer, feats, logits, pids):
        self.calls.append(("extra_loss", trainer.step))
        return None

    def on_after_backward(self, trainer):
        assert trainer.model.backbone.conv1.weight.grad is not None
        self.calls.append(("after_backward", trainer.step))

    def on_batch_end(self, trainer, step, logs):
        self.calls.append(("batch_end", step))

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(("epoch_end", epoch))

    def on_train_end(self, trainer):
        self.calls.append(("train_end",))


def test_callback_order(memory_loader) -> None:
    rec = _Recorder()
    engine.train(_model(), ITEMS, _config(), callbacks=[rec])
    want = [("train_start",)]
    for epoch in range(2):
        want.append(("epoch_start", epoch))
        for step in range(epoch * BATCHES, (epoch + 1) * BATCHES):
            want += [("batch_start", step), ("extra_loss", step), ("after_backward", step), ("batch_end", step)]
        want.append(("epoch_end", epoch))
    want.append(("train_end",))
    assert rec.calls == want
    assert memory_loader[0].epochs_set == [0, 1]


def test_extra_loss_and_gradient_edits_take_effect(memory_loader) -> None:
    class Freeze(Callback):
        def extra_loss(self, trainer, feats, logits, pids):
            return feats.sum() * 0 + 2.5

        def on_after_backward(self, trainer):
            trainer.model.backbone.conv1.weight.grad.zero_()

        def on_batch_end(self, trainer, step, logs):
            assert logs["loss"] == pytest.approx(logs["id_loss"] + logs["triplet_loss"] + 2.5, rel=1e-5)

    model = _model()
    before = model.backbone.conv1.weight.detach().clone()
    layer1_before = model.backbone.layer1[0].conv1.weight.detach().clone()
    res = engine.train(model, ITEMS, _config(weight_decay=0.0), callbacks=[Freeze()])
    assert res.history[-1]["extra_loss"] == pytest.approx(2.5)
    assert torch.equal(model.backbone.conv1.weight.detach().cpu(), before)
    assert not torch.equal(model.backbone.layer1[0].conv1.weight.detach().cpu(), layer1_before)


def test_should_stop_ends_after_the_epoch(memory_loader, tmp_path) -> None:
    class Stop(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.should_stop = True

    res = engine.train(_model(), ITEMS, _config(epochs=5), callbacks=[Stop()], out=tmp_path / "m.pt")
    assert res.epochs == 1 and len(res.history) == 1
    assert load_model(tmp_path / "m.pt").meta["train"]["epochs"] == 1


class _Crash(Callback):
    def on_epoch_start(self, trainer, epoch):
        if epoch == 1:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted_run(memory_loader, tmp_path) -> None:
    straight = engine.train(_model(), ITEMS, _config(), out=tmp_path / "a.pt").model
    with pytest.raises(KeyboardInterrupt):
        engine.train(_model(), ITEMS, _config(), out=tmp_path / "b.pt", callbacks=[_Crash()])
    assert not (tmp_path / "b.pt").exists()
    state = load_raw(tmp_path / "b.state.pt")  # weights_only=True
    assert state["epoch"] == 1 and state["step"] == BATCHES and len(state["rng"]) == 1
    # A fresh model with other initial weights: everything must come from the state file.
    resumed = engine.train(_model(seed=99), ITEMS, _config(), out=tmp_path / "b.pt", resume=True).model
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rows_a = [json.loads(x) for x in (tmp_path / "a.log.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_b] == [1, 2]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_resume_refuses_changed_options_and_missing_state(memory_loader, tmp_path) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        engine.train(_model(), ITEMS, _config(), out=tmp_path / "m.pt", resume=True)
    with pytest.raises(KeyboardInterrupt):
        engine.train(_model(), ITEMS, _config(), out=tmp_path / "m.pt", callbacks=[_Crash()])
    with pytest.raises(InputError, match=r"lr: 0.00035 -> 0.001"):
        engine.train(_model(), ITEMS, _config(lr=1e-3), out=tmp_path / "m.pt", resume=True)
    other_size = ReIDNet(ReIDConfig(arch="tiny", num_classes=N_IDS, input_size=(128, 64)))
    other_arch = ReIDNet(ReIDConfig(arch="small", num_classes=N_IDS, input_size=(64, 32)))
    for model in (other_size, other_arch):
        with pytest.raises(InputError, match="started from a different architecture or input size"):
            engine.train(model, ITEMS, _config(), out=tmp_path / "m.pt", resume=True)
    moved = [SimpleNamespace(path=f"x{i}.jpg", pid=it.pid, camid=it.camid) for i, it in enumerate(ITEMS)]
    with pytest.raises(InputError, match="started from different training data"):
        engine.train(_model(), moved, _config(), out=tmp_path / "m.pt", resume=True)
    # Extending the run: the schedule derived from --epochs must be kept, and the message says how.
    with pytest.raises(InputError, match="`warmup_epochs`=1 `milestones`=1"):
        engine.train(
            _model(), ITEMS, _config(epochs=4, warmup_epochs=2, milestones=(2,)), out=tmp_path / "m.pt", resume=True
        )
    engine.train(_model(), ITEMS, _config(epochs=3), out=tmp_path / "m.pt", resume=True)
    with pytest.raises(
        InputError, match=r"finished 3 of 3 epochs; raise `epochs` \(keeping its schedule: `warmup_epochs`=1"
    ):
        engine.train(_model(), ITEMS, _config(epochs=3), out=tmp_path / "m.pt", resume=True)


def test_bad_inputs_give_clear_errors(memory_loader) -> None:
    with pytest.raises(DatasetError, match="no training images"):
        engine.train(_model(), [], _config())
    with pytest.raises(InputError, match="6 identities, fewer than P=8"):
        engine.train(_model(), ITEMS, _config(p=8))
    with pytest.raises(InputError, match="K .* must be >= 2"):
        _config(k=1)
    with pytest.raises(InputError, match="classifier has 6 classes"):
        engine.train(_model(), [*ITEMS, SimpleNamespace(path="", pid=6, camid=0)], _config())


def test_lr_schedule() -> None:
    step = lr_factor(TrainConfig(epochs=120))
    assert [round(step(e), 6) for e in (0, 5, 10, 39, 40, 69, 70, 119)] == [0.1, 0.55, 1, 1, 0.1, 0.1, 0.01, 0.01]
    cos = lr_factor(TrainConfig(epochs=12, warmup_epochs=2, schedule="cosine", min_lr_factor=0.1))
    assert cos(2) == pytest.approx(1.0) and cos(7) == pytest.approx(0.55) and cos(11) > 0.1


def test_config_from_dict_and_scaling() -> None:
    c = TrainConfig.for_epochs(12, lr=1e-3)
    assert (c.warmup_epochs, c.milestones, c.lr) == (1, (4, 7), 1e-3)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(InputError, match="unknown training options"):
        TrainConfig.from_dict({"lr": 1e-3, "lr_decay": 2})
    with pytest.raises(InputError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_amp_channels_last_run(memory_loader) -> None:
    seen = {}

    class Probe(Callback):
        def on_batch_end(self, trainer, step, logs):
            seen["amp"], seen["cl"] = trainer.amp, trainer.channels_last
            seen["scale"] = trainer.scaler.get_scale()
            seen["fmt"] = trainer.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)

    res = engine.train(_model(), ITEMS, _config(epochs=3, lr=1e-3), callbacks=[Probe()], device="cuda")
    assert seen["amp"] and seen["cl"] and seen["fmt"] and seen["scale"] > 1
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert next(res.model.parameters()).device.type == "cuda"


def test_channels_last_on_cpu_trains_the_same_values(memory_loader) -> None:
    """Channels-last is only a layout: the same run in NCHW ends at the same weights (up to rounding).
    On a CPU it is opt-in, so that a seed reproduces an NCHW run exactly by default."""
    layouts = []

    class Probe(Callback):
        def on_batch_end(self, trainer, step, logs):
            layouts.append(trainer.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last))

    config = _config(optimizer="sgd", lr=0.05)
    a = engine.train(_model(), ITEMS, config.replace(channels_last=True), callbacks=[Probe()], device="cpu").model
    b = engine.train(_model(), ITEMS, config, callbacks=[Probe()], device="cpu").model
    assert layouts == [True] * (2 * BATCHES) + [False] * (2 * BATCHES)
    assert config.uses_channels_last("cuda") and not config.replace(channels_last=False).uses_channels_last("cuda")
    assert a.backbone.conv1.weight.is_contiguous()  # handed back in the default layout
    assert not torch.equal(a.backbone.conv1.weight, _model().backbone.conv1.weight)  # it did train
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-4, atol=1e-5)


def test_callbacks_leaving_the_model_in_eval_mode_do_not_break_training(memory_loader) -> None:
    class Tracer(Callback):
        # What torch-pruning's DependencyGraph does to a model it traces.
        def on_epoch_start(self, trainer, epoch):
            trainer.model.eval()

        def on_batch_start(self, trainer, step, batch):
            trainer.model.eval()

    res = engine.train(_model(), ITEMS, _config(), callbacks=[Tracer()])
    assert len(res.history) == 2 and "id_loss" in res.history[-1]


def test_periodic_evaluation_tracks_the_best_epoch(memory_loader, monkeypatch, tmp_path) -> None:
    scores = iter([5.0, 9.0, 7.0])
    evaluated: list[int] = []

    def fake_evaluate(model, eval_data, batch_size, device):
        assert not model.training and eval_data == "dataset"
        evaluated.append(1)
        mAP = next(scores)
        return {"rank1": mAP + 1, "mAP": mAP, "mINP": 1.0}

    monkeypatch.setattr(engine, "evaluate", fake_evaluate)
    snapshots: dict[int, dict] = {}

    class Snapshot(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            snapshots[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    config = _config(epochs=5, eval_every=2)  # evaluated after epochs 2, 4 and the last
    res = engine.train(_model(), ITEMS, config, eval_data="dataset", out=tmp_path / "m.pt", callbacks=[Snapshot()])
    assert len(evaluated) == 3
    assert res.best == {"epoch": 4, "rank1": 10.0, "mAP": 9.0, "mINP": 1.0}
    rows = [json.loads(x) for x in (tmp_path / "m.log.jsonl").read_text().splitlines()]
    assert [r.get("mAP") for r in rows] == [None, 5.0, None, 9.0, 7.0]
    best = load_model(tmp_path / "m.best.pt")
    assert best.meta["epoch"] == 4
    assert all(torch.equal(v, snapshots[3][k]) for k, v in best.state_dict().items())
    assert load_raw(tmp_path / "m.state.pt")["best"]["epoch"] == 4
    assert load_model(tmp_path / "m.pt").meta["train"]["best"]["mAP"] == 9.0
