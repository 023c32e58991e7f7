"""Latency-budget pruning: the search on a fake clock (deterministic), real backends once, errors, CLI."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.errors import BackendUnavailableError, InputError, MethodError
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import conv_widths, count_flops
from reidcompress.prune import PruneOptions
from reidcompress.prune import latency as lat
from reidcompress.prune.latency import BackendTimer, LatencyTarget, latency_summary, prune_for_latency

runner = CliRunner()


class FakeClock:
    """Every read advances time by ``step``: each timed call then lasts exactly ``step`` seconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeEmbedder:
    """Stands for a deployed network: each call sets the fake clock's step to the network's latency."""

    backend, device = "torch", "cpu"

    def __init__(self, clock: FakeClock, ms: Callable[[], float], input_size: tuple[int, int]) -> None:
        self.clock, self.ms, self.input_size = clock, ms, input_size

    def embed(self, batch):
        self.clock.step = self.ms() / 1e3


class FakeTimer(BackendTimer):
    """The real BackendTimer (and timing code) on a fake clock whose latency is a fixed, non-linear
    function of the FLOPs: ``base_ms + per_flop_ms * ratio ** 1.5``.

    ``drift=(n, f)``: from the n-th measurement on (a search level, or an interleaved check), every
    latency is f times as long (a load change). ``jitter``: the pruned network's calls alternate
    between 1 + jitter and 1 - jitter times its latency (run-to-run noise).
    """

    def __init__(self, target: LatencyTarget, flops0: int, base_ms: float = 2.0, per_flop_ms: float = 10.0,
                 drift: tuple[int, float] = (0, 1.0), jitter: float = 0.0) -> None:  # fmt: skip
        super().__init__(target, clock=FakeClock())
        self.flops0, self.base_ms, self.per_flop_ms, self.drift, self.jitter = (
            flops0,
            base_ms,
            per_flop_ms,
            drift,
            jitter,
        )
        self.measured: list[float] = []

    def latency_ms(self, ratio: float) -> float:
        scale = self.drift[1] if len(self.measured) > self.drift[0] else 1.0
        return (self.base_ms + self.per_flop_ms * ratio**1.5) * scale

    def __call__(self, model: ReIDNet):
        self.measured.append(self._ratio(model))
        return super().__call__(model)

    def ratio(self, model: ReIDNet, reference: ReIDNet):
        self.measured.append(self._ratio(model))
        return super().ratio(model, reference)

    def _ratio(self, model: ReIDNet) -> float:
        return count_flops(model, model.config.input_size) / self.flops0

    @contextlib.contextmanager
    def deployed(self, model: ReIDNet):
        ratio, calls = self._ratio(model), [0]

        def ms() -> float:
            calls[0] += 1
            noise = 1.0 if ratio >= 1.0 else 1.0 + self.jitter * (-1) ** calls[0]
            return self.latency_ms(ratio) * noise

        self.device_name = "cpu"
        yield FakeEmbedder(self.clock, ms, model.config.input_size)


def fake_timer(target: LatencyTarget, flops0: int, **kw) -> FakeTimer:
    return FakeTimer(target, flops0, **kw)


def _target(ms: float, **kw) -> LatencyTarget:
    return LatencyTarget(ms, backend="torch", batch=2, threads=1, warmup=0, runs=3, **kw)


def test_search_converges_deterministically_on_a_fake_clock(tiny_model: ReIDNet) -> None:
    round_to = 4
    flops0 = count_flops(tiny_model, (64, 32))
    target = _target(7.0)
    results = []
    for _ in range(2):
        model = copy.deepcopy(tiny_model)
        timer = fake_timer(target, flops0)
        record = prune_for_latency(model, "hao_li", PruneOptions(round_to=round_to), target, timer=timer)
        results.append((conv_widths(model), record["latency_target"]["measured_ms"]))
        lt = record["latency_target"]
        assert lt["within_tolerance"] and abs(lt["measured_ms"] - 7.0) <= 0.35 and record["target_met"] is True
        assert lt["unpruned_ms"] == pytest.approx(12.0) and len(lt["trials"]) <= 2 + target.max_trials
        # The record's network is the measured one: its FLOPs give the latency the fake clock reported.
        ratio = count_flops(model, (64, 32)) / flops0
        assert lt["measured_ms"] == pytest.approx(2 + 10 * ratio**1.5)
        assert record["flops_ratio"] == pytest.approx(ratio) and record["round_to"] == round_to
        assert all(w % round_to == 0 for k, w in conv_widths(model).items() if k.endswith("0.conv1"))
        assert lt["backend"] == "torch" and lt["batch"] == 2 and lt["device"].startswith("cpu")
    assert results[0] == results[1]


def test_search_with_per_layer_rates_from_a_sensitivity_profile(tiny_model: ReIDNet, tmp_path: Path) -> None:
    from reidcompress.prune.sensitivity import FORMAT, SensitivityProfile

    widths = conv_widths(tiny_model)
    drops = {"layer1": 9.0, "layer2": 1.0, "layer3": 1.0, "layer4": 5.0}  # points lost at rate 0.5
    layers = [
        {
            "root": f"backbone.{stage}.0.conv1",
            "channels": widths[f"backbone.{stage}.0.conv1"],
            "points": [{"rate": r, "rank1_drop": d * r / 0.5, "mAP_drop": d} for r in (0.5, 0.9)],
        }
        for stage, d in drops.items()
    ]
    path = tmp_path / "s.json"
    doc = {"format": FORMAT, "method": "hao_li", "checkpoint_sha256": "x", "residual": False, "layers": layers}
    path.write_text(json.dumps(doc))
    options = PruneOptions(round_to=1, sensitivity=SensitivityProfile.load(path))
    flops0 = count_flops(tiny_model, (64, 32))
    record = prune_for_latency(tiny_model, "hao_li", options, _target(7.0), timer=fake_timer(_target(7.0), flops0))
    assert record["latency_target"]["within_tolerance"] and record["sensitivity"]["file"] == str(path)
    rates = record["group_rates"]
    assert rates["backbone.layer1.0.conv1"] < rates["backbone.layer2.0.conv1"]  # the sensitive layer is spared


def test_search_measures_the_bracket_again_when_the_timings_drift(tiny_model: ReIDNet) -> None:
    flops0 = count_flops(tiny_model, (64, 32))
    # The unpruned (12 ms) and most pruned network are measured, then the machine gets twice as fast.
    timer = fake_timer(_target(5.0), flops0, drift=(2, 0.5))
    record = prune_for_latency(tiny_model, "hao_li", PruneOptions(round_to=1), _target(5.0), timer=timer)
    lt = record["latency_target"]
    assert lt["within_tolerance"] and lt["unpruned_ms"] == pytest.approx(6.0)  # the second measurement
    assert [t["flops_ratio"] for t in lt["trials"]].count(1.0) == 2
    ratio = count_flops(tiny_model, (64, 32)) / flops0
    assert lt["measured_ms"] == pytest.approx((2 + 10 * ratio**1.5) / 2)
    # Faster still after the first level: the unpruned network now meets the target, which is then an error.
    with pytest.raises(InputError, match="when measured again"):
        prune_for_latency(
            copy.deepcopy(tiny_model), "hao_li", PruneOptions(round_to=1), _target(7.0),
            timer=fake_timer(_target(7.0), flops0, drift=(2, 0.4)),
        )  # fmt: skip


def test_the_interleaved_check_moves_a_level_that_a_load_change_misjudged(tiny_model: ReIDNet) -> None:
    # The unpruned network is timed at 12 ms, then the machine gets 1.2x faster for good: the search's
    # levels all read fast, and the one it picks at "7 ms" is 0.70 of the unpruned latency, not 7/12.
    flops0 = count_flops(tiny_model, (64, 32))
    timer = fake_timer(_target(7.0), flops0, drift=(1, 1 / 1.2))
    record = prune_for_latency(tiny_model, "hao_li", PruneOptions(round_to=1), _target(7.0), timer=timer)
    lt = record["latency_target"]
    goal = 7.0 / 12.0
    assert lt["target_ratio"] == pytest.approx(goal)
    first, last = lt["checks"][0], lt["checks"][-1]
    assert abs(first["ratio"] - goal) > 0.05 * goal  # the sequential search alone would have missed
    assert len(lt["checks"]) >= 2 and abs(last["ratio"] - goal) <= 0.05 * goal
    # The kept network is the last level checked, and its ratio is that of the fake latency model.
    ratio = count_flops(tiny_model, (64, 32)) / flops0
    assert lt["interleaved"]["ratio"] == pytest.approx((2 + 10 * ratio**1.5) / 12)
    assert lt["interleaved"]["spread"] == 0.0 and lt["unpruned_ms"] == pytest.approx(12 / 1.2)
    assert lt["within_tolerance"] and record["target_met"] and not lt["noise_exceeds_tolerance"]


def test_noise_above_the_tolerance_is_said_instead_of_within(tiny_model: ReIDNet) -> None:
    # Each round's pruned timing is 10% over or under: the median ratio is right, but one re-timing
    # could be 10% off, more than the 5% tolerance.
    target = LatencyTarget(7.0, backend="torch", batch=2, threads=1, warmup=0, runs=4)
    timer = fake_timer(target, count_flops(tiny_model, (64, 32)), jitter=0.1)
    record = prune_for_latency(tiny_model, "hao_li", PruneOptions(round_to=1), target, timer=timer)
    lt = record["latency_target"]
    assert lt["interleaved"]["spread"] == pytest.approx(0.1)
    assert lt["within_tolerance"] and lt["noise_exceeds_tolerance"] and record["target_met"] is False
    summary = latency_summary(lt)
    assert "spread, 10.0%, exceeds the 5% tolerance" in summary and "within 5%" not in summary


def test_latency_ratio_takes_each_rounds_ratio(tiny_model: ReIDNet) -> None:
    from reidcompress.verify.latency import latency_ratio

    clock = FakeClock()
    times = iter([4.0, 10.0, 6.0, 10.0, 8.0, 20.0, 4.0, 10.0])  # model, reference, round by round
    model = FakeEmbedder(clock, lambda: next(times), (64, 32))
    reference = FakeEmbedder(clock, lambda: next(times), (64, 32))
    st = latency_ratio(model, reference, 2, warmup=0, runs=4, clock=clock)
    # Per-round ratios 0.4, 0.6, 0.4, 0.4: the third round's load slowed both alike and cancels out,
    # where the ratio of the medians (5 / 10) would not.
    assert st.ratio == pytest.approx(0.4) and st.rounds == 4
    assert st.spread == pytest.approx((0.45 - 0.4) / 2 / 0.4)
    assert st.model.p50_ms == pytest.approx(5.0) and st.reference.p50_ms == pytest.approx(10.0)


def test_closest_level_is_recorded_as_not_meeting_the_target(tiny_model: ReIDNet) -> None:
    # Channel counts cannot hit 7 ms within 0.01%: the closest measured level is kept and said to miss.
    target = _target(7.0, tolerance=1e-4, max_trials=2)
    timer = fake_timer(target, count_flops(tiny_model, (64, 32)))
    record = prune_for_latency(copy.deepcopy(tiny_model), "hao_li", PruneOptions(round_to=4), target, timer=timer)
    assert record["latency_target"]["within_tolerance"] is False and record["target_met"] is False
    assert "NOT within" in latency_summary(record["latency_target"])


def test_unreachable_targets_are_clear_errors(tiny_model: ReIDNet) -> None:
    flops0 = count_flops(tiny_model, (64, 32))
    widths = conv_widths(tiny_model)
    with pytest.raises(InputError, match="nothing to prune"):
        prune_for_latency(tiny_model, "hao_li", PruneOptions(), _target(12.5), timer=fake_timer(_target(12.5), flops0))
    with pytest.raises(MethodError, match="below what hao_li can reach"):
        prune_for_latency(tiny_model, "hao_li", PruneOptions(), _target(3.0), timer=fake_timer(_target(3.0), flops0))
    assert conv_widths(tiny_model) == widths  # untouched
    with pytest.raises(InputError, match="exactly one"):
        prune_for_latency(tiny_model, "hao_li", PruneOptions(rate=0.5), _target(7.0))
    with pytest.raises(MethodError, match="one-shot"):
        prune_for_latency(tiny_model, "psfp", PruneOptions(epochs=1), _target(7.0))
    with pytest.raises(InputError, match="drop `steps`"):
        prune_for_latency(tiny_model, "hao_li", PruneOptions(steps=2), _target(7.0))
    with pytest.raises(InputError, match="unknown `backend`"):
        LatencyTarget(5.0, backend="openvino").check()


def _has_tensorrt() -> bool:
    try:
        LatencyTarget(1.0, backend="tensorrt").check()
        return True
    except BackendUnavailableError:
        return False


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT and a GPU are present")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(tiny_model: ReIDNet, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        LatencyTarget(5.0, backend="tensorrt").check()
    ckpt, out = save_model(tmp_path / "t.pt", tiny_model), tmp_path / "p.pt"
    args = ["prune", str(ckpt), "-m", "hao_li", "--target-latency", "5", "--backend", "tensorrt", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "TensorRT is not installed" in res.output and not out.exists()


@pytest.mark.trt
def test_tensorrt_timer_measures_an_engine(tiny_model: ReIDNet) -> None:
    timer = BackendTimer(LatencyTarget(1.0, backend="tensorrt", batch=4, warmup=2, runs=5))
    stats = timer(tiny_model)
    assert stats.batch == 4 and stats.p50_ms > 0 and timer.device_name.startswith("cuda")


def test_onnxruntime_timer_measures_the_exported_model(tiny_model: ReIDNet) -> None:
    timer = BackendTimer(LatencyTarget(1.0, backend="onnxruntime", batch=2, threads=1, warmup=1, runs=3, opset=17))
    with timer.deployed(tiny_model) as emb:
        assert emb.backend == "onnxruntime" and emb.threads == 1
    stats = timer(tiny_model)
    assert stats.batch == 2 and stats.runs == 3 and stats.p50_ms > 0 and timer.device_name == "cpu"


@pytest.fixture
def ckpt(tiny_model: ReIDNet, tmp_path: Path) -> Path:
    return save_model(tmp_path / "tiny.pt", tiny_model)


def test_cli_records_the_latency_and_info_shows_it(ckpt: Path, tiny_model: ReIDNet, tmp_path, monkeypatch) -> None:
    flops0 = count_flops(tiny_model, (64, 32))
    monkeypatch.setattr(lat, "BackendTimer", lambda target: fake_timer(target, flops0))
    out = tmp_path / "p.pt"
    args = ["prune", str(ckpt), "-m", "hao_li", "--target-latency", "7", "--backend", "torch", "--batch", "4"]
    res = runner.invoke(app, [*args, "--threads", "1", "--round-to", "4", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)["latency_target"]
    assert rec["within_tolerance"] and (rec["backend"], rec["batch"], rec["threads"]) == ("torch", 4, 1)
    saved = load_model(out).pruning["latency_target"]
    assert saved["measured_ms"] == rec["measured_ms"] and saved["target_ms"] == 7.0
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "latency target" in info.stdout and "torch fp32" in info.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-latency", "1e9", "--backend", "torch", "--latency-runs", "2"], "nothing to prune"),
        (["--target-latency", "1e-6", "--backend", "torch", "--latency-runs", "2"], "below what hao_li can reach"),
        (["--target-latency", "5", "--backend", "nope"], "unknown --backend"),
        (["--target-latency", "5", "--rate", "0.5"], "exactly one"),
        (["--target-latency", "5", "--steps", "2"], "drop --steps"),
        (["--backend", "torch", "--rate", "0.5"], "give it too"),
    ],
)
def test_cli_bad_latency_targets_exit_2_and_write_nothing(ckpt: Path, tmp_path: Path, args, message) -> None:
    out = tmp_path / "p.pt"
    res = runner.invoke(app, ["prune", str(ckpt), "-m", "hao_li", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output and not out.exists()
