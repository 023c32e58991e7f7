"""Latency-budget pruning: search the pruning level until the latency measured on a backend meets a target.

Engineers ship for "8 ms at batch 8 on this device", not for "rate 0.5". The search runs over FLOPs
targets of a one-shot method (one rate for all groups, or per-layer rates from a sensitivity
profile), prunes a copy of the network at each level and measures it as deployed: exported to ONNX
and run in ONNX Runtime, run in PyTorch, or built into a TensorRT engine, always timed by
``verify.latency`` (the code ``bench`` and ``verify`` use). Latency is close to affine in FLOPs on a
given backend, so each new level interpolates between the two closest measurements on either side of
the target. Channel scores are computed once on the unpruned network; the best level's plan is then
applied to the network itself, so the result is exactly the network that was measured.

On a shared machine the milliseconds of the same network change with the load, so levels timed at
different moments are not comparable: a level the search timed in a quiet minute reads 7-8% slower
when timed again beside the unpruned network. The search above only proposes a level; the deciding
measurement times it interleaved with the unpruned network in one loop (``verify.latency.latency_ratio``,
as ``bench`` and ``verify`` compare models), against the target as a share of the unpruned latency,
and moves the level while that ratio misses. The record gives the ratio and its run-to-run spread,
and says so when the spread is larger than the tolerance: then no level can be shown to be within it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from reidcompress.errors import InputError, MethodError
from reidcompress.models.reid import ReIDNet
from reidcompress.models.summary import complexity
from reidcompress.prune.engine import ScoredGroup, apply_plan, select_channels
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.planning import FlopModel
from reidcompress.prune.record import pruning_record
from reidcompress.prune.registry import MethodSpec, get_method
from reidcompress.prune.strategies.oneshot import most_pruned, plan_kept, score_model
from reidcompress.prune.strategies.result import StrategyResult
from reidcompress.prune.training import PruneData
from reidcompress.runtime.base import Embedder
from reidcompress.verify.latency import (
    MEASURE_SPINNING,
    Clock,
    LatencyStats,
    RatioStats,
    embedder_latency,
    latency_ratio,
)

__all__ = [
    "BACKENDS",
    "LatencyTarget",
    "BackendTimer",
    "Trial",
    "Check",
    "check_latency_request",
    "prune_for_latency",
    "search_latency",
    "latency_summary",
]

BACKENDS = ("onnxruntime", "torch", "tensorrt")
TRT_PRECISION = "fp16"  # what a TensorRT deployment of a ReID net runs at; INT8 needs calibration data


class Timer(Protocol):
    """Times networks as deployed: alone (the search's levels), or against a reference in one loop."""

    def __call__(self, model: ReIDNet) -> LatencyStats: ...

    def ratio(self, model: ReIDNet, reference: ReIDNet) -> RatioStats: ...


@dataclass(frozen=True)
class LatencyTarget:
    """What to meet and where to measure it.

    Attributes:
        target_ms: median (p50) latency of one batch, in milliseconds.
        backend: ``onnxruntime`` (the exported ONNX model), ``torch`` or ``tensorrt`` (an fp16 engine).
        batch: images per timed call.
        threads: CPU threads (ONNX Runtime intra-op threads, or PyTorch's); None: the backend's default.
        device: ``cpu`` or ``cuda`` for onnxruntime and torch.
        tolerance: relative band around the target that counts as met.
        max_trials: pruning levels measured after the unpruned and the most pruned network.
        max_checks: interleaved timings against the unpruned network (the deciding measurement; a
            level is moved while its ratio misses the target).
        warmup, runs: untimed and timed calls per measurement.
        opset: ONNX opset of the exported models (default: ``export``'s).
    """

    target_ms: float
    backend: str = "onnxruntime"
    batch: int = 1
    threads: int | None = None
    device: str = "cpu"
    tolerance: float = 0.05
    max_trials: int = 8
    max_checks: int = 4
    warmup: int = 5
    runs: int = 30
    opset: int | None = None

    def check(self) -> None:
        """InputError for bad values; BackendUnavailableError when the backend cannot run here."""
        if self.backend not in BACKENDS:
            raise InputError(f"unknown `backend` {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if not self.target_ms > 0:
            raise InputError(f"`target_latency` must be a positive number of milliseconds, got {self.target_ms}")
        if self.batch < 1 or (self.threads is not None and self.threads < 1):
            raise InputError("`batch` and `threads` must be at least 1")
        if not 0 < self.tolerance < 1 or min(self.max_trials, self.max_checks, self.runs) < 1 or self.warmup < 0:
            raise InputError("need 0 < tolerance < 1, max_trials, max_checks and runs >= 1, and warmup >= 0")
        if self.backend == "tensorrt":
            from reidcompress.export.tensorrt import check_tensorrt

            check_tensorrt()
        elif self.backend == "torch":
            from reidcompress.runtime.torch_backend import resolve_device

            resolve_device(self.device)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BackendTimer:
    """The latency of a network as deployed on ``target.backend``, measured by ``embedder_latency``.

    ``clock`` is the timing code's clock: tests pass a fake one to make the search deterministic.
    """

    def __init__(self, target: LatencyTarget, clock: Clock = time.perf_counter) -> None:
        self.target = target
        self.clock = clock
        self.device_name: str | None = None

    def __call__(self, model: ReIDNet) -> LatencyStats:
        t = self.target
        with self.deployed(model) as emb:
            self.device_name = emb.device
            return embedder_latency(emb, t.batch, warmup=t.warmup, runs=t.runs, clock=self.clock)

    def ratio(self, model: ReIDNet, reference: ReIDNet) -> RatioStats:
        """``model``'s latency over ``reference``'s, both deployed and timed alternately in one loop."""
        t = self.target
        with self.deployed(model) as emb, self.deployed(reference) as ref:
            self.device_name = emb.device
            return latency_ratio(emb, ref, t.batch, warmup=t.warmup, runs=t.runs, clock=self.clock)

    @contextlib.contextmanager
    def deployed(self, model: ReIDNet) -> Iterator[Embedder]:
        """``model`` loaded in the backend: exported first for ONNX Runtime and TensorRT."""
        t = self.target
        if t.backend == "torch":
            from reidcompress.runtime.torch_backend import TorchEmbedder

            with _torch_threads(t.threads):
                yield TorchEmbedder(copy.deepcopy(model), device=t.device)
            return
        from reidcompress.export.onnx import META_PREFIX, write_onnx

        with tempfile.TemporaryDirectory(prefix="reidcompress-latency-") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            meta = {META_PREFIX + "input_size": json.dumps(list(model.config.input_size))}
            write_onnx(copy.deepcopy(model), onnx_path, opset=t.opset, metadata=meta)
            if t.backend == "onnxruntime":
                from reidcompress.runtime.onnx_backend import OnnxEmbedder

                with OnnxEmbedder(onnx_path, device=t.device, threads=t.threads, spinning=MEASURE_SPINNING) as emb:
                    yield emb
                return
            from reidcompress.export.quantize import convert_fp16
            from reidcompress.export.tensorrt import EngineSpec, build_engine
            from reidcompress.runtime.trt_backend import TrtEmbedder

            # The engine's precision comes from the model (TensorRT 11 has no FP16 builder flag): the FP16
            # ONNX model that `export --trt --precision fp16` builds from.
            fp16_path = Path(tmp) / "model.fp16.onnx"
            convert_fp16(onnx_path, fp16_path)
            engine = Path(tmp) / "model.engine"
            spec = EngineSpec(min_batch=1, opt_batch=t.batch, max_batch=t.batch)
            build_engine(fp16_path, engine, spec, timing_cache=Path(tmp) / "timing.cache")
            with TrtEmbedder(engine) as emb:
                yield emb


@dataclass(frozen=True)
class Level:
    """A pruning level: the FLOPs target asked for, the planned network's FLOPs ratio, its kept widths."""

    requested: float
    flops_ratio: float
    kept: Mapping[str, int]


@dataclass(frozen=True)
class Trial(Level):
    """A level measured on its own: its latency."""

    stats: LatencyStats

    @property
    def ms(self) -> float:
        return self.stats.p50_ms

    def to_dict(self) -> dict[str, float]:
        return {"flops_ratio": round(self.flops_ratio, 6), "p50_ms": self.ms, "p95_ms": self.stats.p95_ms}


class _Search:
    """Plans, prunes a copy and measures one level at a time, on the scores of the unpruned network."""

    def __init__(
        self, model: ReIDNet, groups: list[ScoredGroup], options: PruneOptions, criterion: Any, timer: Timer
    ) -> None:
        self.model, self.groups, self.options, self.criterion, self.timer = model, groups, options, criterion, timer
        self.flop_model = FlopModel.of(model, model.config.input_size)

    def at(self, requested: float | None = None, kept: Mapping[str, int] | None = None) -> Trial:
        if kept is None:
            assert requested is not None
            kept = self.plan(requested)
        ratio = self.flops_ratio(kept)
        return Trial(ratio if requested is None else requested, ratio, dict(kept), self.timer(self.pruned(kept)))

    def check(self, requested: float, kept: Mapping[str, int]) -> Check:
        """The deciding measurement: the level timed interleaved with the unpruned network."""
        stats = self.timer.ratio(self.pruned(kept), self.model)
        return Check(requested, self.flops_ratio(kept), dict(kept), stats)

    def plan(self, requested: float) -> dict[str, int]:
        flops = requested * self.flop_model.total
        return dict(plan_kept(self.model, self.groups, self.criterion, self.options, flops=flops))

    def flops_ratio(self, kept: Mapping[str, int]) -> float:
        return self.flop_model.estimate(self.groups, kept) / self.flop_model.total

    def pruned(self, kept: Mapping[str, int]) -> ReIDNet:
        pruned = copy.deepcopy(self.model)
        apply_plan(pruned, select_channels(self.groups, kept))
        return pruned


@dataclass(frozen=True)
class Check(Level):
    """A level timed interleaved with the unpruned network: its latency as a ratio, and that ratio's spread."""

    stats: RatioStats

    def to_dict(self) -> dict[str, float]:
        return {"flops_ratio": round(self.flops_ratio, 6), **self.stats.to_dict()}


def _next_level(lo: Trial, hi: Trial, target_ms: float) -> float:
    """Linear interpolation of latency in FLOPs between a level under the target and one over it."""
    span = hi.flops_ratio - lo.flops_ratio
    if hi.ms <= lo.ms:  # timing noise inverted the bracket: bisect instead
        return lo.flops_ratio + span / 2
    frac = (target_ms - lo.ms) / (hi.ms - lo.ms)
    return lo.flops_ratio + span * min(0.95, max(0.05, frac))


@dataclass(frozen=True)
class _Outcome:
    best: Trial
    history: list[Trial]  # every measurement, in order
    unpruned: Trial  # the latest measurement of the unpruned network


def _search(search: _Search, target: LatencyTarget, method: str, log: Callable[[str], None]) -> _Outcome:
    """Measure the unpruned and the most pruned network, then interpolate between the closest levels.

    On a shared machine the latency of the same network changes with the load: a level measuring
    outside its bracket means the conditions changed, so the bracket is measured again and only
    measurements under the new conditions compete for the best level.
    """
    goal, tol = target.target_ms, target.tolerance
    full = search.at(kept={g.root: g.size for g in search.groups})
    log(f"unpruned: {full.ms:.2f} ms")
    _check_unpruned(full, target)
    floor = search.at(kept=most_pruned(search.groups, search.criterion, search.options))
    log(f"most pruned ({floor.flops_ratio:.3f} of the FLOPs): {floor.ms:.2f} ms")
    _check_floor(floor, target, method)
    history, current = [full, floor], [full, floor]
    lo, hi = floor, full
    for _ in range(target.max_trials):
        if _met(_best(current, goal), target):
            break
        trial = search.at(requested=_next_level(lo, hi, goal))
        if any(dict(trial.kept) == dict(t.kept) for t in current):
            span = f"{lo.flops_ratio:.3f} and {hi.flops_ratio:.3f}"
            log(f"no level between {span} of the FLOPs in steps of {search.options.round_to} channels")
            break
        log(f"trial {len(history) - 1}: {trial.flops_ratio:.3f} of the FLOPs: {trial.ms:.2f} ms")
        history.append(trial)
        if not lo.ms * (1 - tol) <= trial.ms <= hi.ms * (1 + tol):
            log("the timings drifted (did the machine's load change?): measuring the bracket again")
            lo, hi = search.at(lo.requested, lo.kept), search.at(hi.requested, hi.kept)
            log(f"  {lo.flops_ratio:.3f} of the FLOPs: {lo.ms:.2f} ms; {hi.flops_ratio:.3f}: {hi.ms:.2f} ms")
            history += [lo, hi]
            current = [lo, hi]
            _check_unpruned(hi, target, again=True)
        current.append(trial)
        if trial.ms > goal and trial.flops_ratio < hi.flops_ratio:
            hi = trial
        elif trial.ms <= goal and trial.flops_ratio > lo.flops_ratio:
            lo = trial
    unpruned = next(t for t in reversed(history) if t.flops_ratio >= 1.0)
    return _Outcome(_best(current, goal), history, unpruned)


@dataclass(frozen=True)
class _Decision:
    best: Check
    checks: list[Check]  # every interleaved timing, in order
    goal: float  # the target as a share of the unpruned latency


def _decide(search: _Search, outcome: _Outcome, target: LatencyTarget, log: Callable[[str], None]) -> _Decision:
    """Time the search's best level interleaved with the unpruned network; move it while the ratio misses.

    The target in milliseconds becomes a share of the unpruned latency once, from the search's latest
    measurement of the unpruned network (the one its levels were compared with); from then on only
    ratios measured in one loop count. Each new level interpolates in FLOPs between the interleaved
    ratios on either side of that share, the unpruned network being 1.0 of itself.
    """
    goal = target.target_ms / outcome.unpruned.ms
    floor = min(t.flops_ratio for t in outcome.history)
    points: list[tuple[float, float]] = [(1.0, 1.0)]
    checks: list[Check] = []
    requested, kept = outcome.best.requested, dict(outcome.best.kept)
    for _ in range(target.max_checks):
        check = search.check(requested, kept)
        checks.append(check)
        st = check.stats
        log(
            f"interleaved with the unpruned network: {check.flops_ratio:.3f} of the FLOPs runs in {st.ratio:.3f} "
            f"of its latency (target {goal:.3f}, run-to-run spread {st.spread:.1%})"
        )
        if _ratio_met(st.ratio, goal, target.tolerance):
            break
        points.append((check.flops_ratio, st.ratio))
        requested = _level_for_ratio(points, goal, floor)
        kept = search.plan(requested)
        if any(kept == dict(c.kept) for c in checks):
            log("no other level closer to the target at this --round-to")
            break
    best = min(checks, key=lambda c: abs(c.stats.ratio - goal))
    return _Decision(best, checks, goal)


def _level_for_ratio(points: list[tuple[float, float]], goal: float, floor: float) -> float:
    """The FLOPs ratio whose latency ratio should be ``goal``: latency is close to affine in FLOPs.

    ``points`` are (FLOPs ratio, latency ratio), (1.0, 1.0) among them: the goal is under the unpruned latency.
    """
    hi = min((p for p in points if p[1] > goal), key=lambda p: p[1])
    below = [p for p in points if p[1] <= goal]
    if below:  # interpolate between the closest ratios on either side
        lo = max(below, key=lambda p: p[1])
        level = lo[0] + (hi[0] - lo[0]) * (goal - lo[1]) / (hi[1] - lo[1])
    elif hi[1] < 1.0 and hi[0] < 1.0:  # extrapolate along the line from the unpruned network through hi
        level = 1.0 - (1.0 - hi[0]) * (1.0 - goal) / (1.0 - hi[1])
    else:
        level = goal
    return min(0.999, max(floor, level))


def _ratio_met(ratio: float, goal: float, tolerance: float) -> bool:
    return abs(ratio - goal) <= tolerance * goal


def _check_unpruned(full: Trial, target: LatencyTarget, again: bool = False) -> None:
    """A target at or above the unpruned network's latency leaves nothing to prune."""
    if full.flops_ratio >= 1.0 and target.target_ms >= full.ms:
        again_note = " when measured again (the machine's load changed during the search)" if again else ""
        raise InputError(
            f"the unpruned model runs in {full.ms:.2f} ms on {target.backend} at batch {target.batch}{again_note}, "
            f"under the {target.target_ms:g} ms target: nothing to prune"
        )


def _check_floor(floor: Trial, target: LatencyTarget, method: str) -> None:
    """A target below the most pruned network's latency cannot be reached."""
    if floor.ms > target.target_ms * (1 + target.tolerance):
        raise MethodError(
            f"{target.target_ms:g} ms is below what {method} can reach with these options: its most pruned "
            f"network ({floor.flops_ratio:.3f} of the FLOPs) runs in {floor.ms:.2f} ms on {target.backend} at "
            f"batch {target.batch} (try `residual`, a smaller `round_to`, or higher sensitivity `rates`)"
        )


def _best(trials: list[Trial], goal: float) -> Trial:
    """The pruned level closest to the target."""
    return min((t for t in trials if t.flops_ratio < 1.0), key=lambda t: abs(t.ms - goal))


def _met(trial: Trial, target: LatencyTarget) -> bool:
    return abs(trial.ms - target.target_ms) <= target.tolerance * target.target_ms


def check_latency_request(spec: MethodSpec, options: PruneOptions, target: LatencyTarget, has_data: bool) -> None:
    """Raise InputError/MethodError for a latency-target pruning that cannot run, before any work."""
    if options.rate is not None or options.target_flops is not None:
        raise InputError("give exactly one of `rate`, `target_flops` or `target_latency`")
    if spec.strategy != "oneshot":
        raise MethodError(f"`target_latency` searches the level of one-shot pruning; {spec.name} is {spec.strategy}")
    if options.steps > 1:
        raise InputError("`target_latency` prunes in one step (each level is measured): drop `steps`")
    dataclasses.replace(options, target_flops=1.0).check(spec, has_data=has_data)
    target.check()


def prune_for_latency(
    model: ReIDNet,
    method: str,
    options: PruneOptions,
    target: LatencyTarget,
    data: PruneData | None = None,
    *,
    timer: Timer | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prune ``model`` in place to the level whose measured latency is closest to ``target``.

    Args:
        options: pruning options without ``rate``/``target_flops`` (the search sets the level).
        timer: measures a network (default: :class:`BackendTimer` on ``target``).
        log: called with a line per measurement.

    Returns:
        The pruning record, with ``latency_target``: target, measured p50/p95, backend, batch, threads,
        device, whether the tolerance was met, and every measured level.

    Raises:
        InputError/MethodError: bad options, a target at or above the unpruned latency, or below
        the most pruned network's; nothing is changed then.
    """
    spec = get_method(method)
    check_latency_request(spec, options, target, has_data=data is not None)
    return search_latency(model, spec, options, target, data, timer, log)


def search_latency(
    model: ReIDNet,
    spec: MethodSpec,
    options: PruneOptions,
    target: LatencyTarget,
    data: PruneData | None,
    timer: Timer | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """``prune_for_latency`` on a request ``check_latency_request`` has passed (``prune_checkpoint`` checks
    it before loading anything)."""
    timer = timer or BackendTimer(target)
    before = complexity(model)
    criterion = spec.make_criterion()
    groups = score_model(model, criterion, options, data)
    log = log or (lambda _: None)
    search = _Search(model, groups, options, criterion, timer)
    outcome = _search(search, target, spec.name, log)
    decision = _decide(search, outcome, target, log)
    best = decision.best
    apply_plan(model, select_channels(groups, best.kept))
    if options.finetune_epochs and data is not None:
        data.fit(model, options.finetune_epochs)
    level = dataclasses.replace(options, target_flops=best.requested)
    record = pruning_record(model, spec, level, StrategyResult.of(groups), before)
    lat = _latency_record(target, outcome, decision, getattr(timer, "device_name", None))
    record["latency_target"] = lat
    # The FLOPs level is only the search's handle; the target the user gave is the latency.
    record["target_met"] = lat["within_tolerance"] and not lat["noise_exceeds_tolerance"]
    return record


def _latency_record(
    target: LatencyTarget, outcome: _Outcome, decision: _Decision, device: str | None
) -> dict[str, Any]:
    from reidcompress.verify.environment import cpu_name, environment

    device = device or target.device
    best = decision.best.stats
    return {
        "target_ms": target.target_ms,
        "target_ratio": decision.goal,
        "measured_ms": best.model.p50_ms,
        "p95_ms": best.model.p95_ms,
        "interleaved": best.to_dict(),
        "within_tolerance": _ratio_met(best.ratio, decision.goal, target.tolerance),
        "noise_exceeds_tolerance": best.spread > target.tolerance,
        "tolerance": target.tolerance,
        "backend": target.backend,
        "precision": TRT_PRECISION if target.backend == "tensorrt" else "fp32",
        "batch": target.batch,
        "threads": target.threads,
        "device": f"cpu ({cpu_name()})" if device == "cpu" else device,
        "unpruned_ms": best.reference.p50_ms,
        "trials": [t.to_dict() for t in outcome.history],
        "checks": [c.to_dict() for c in decision.checks],
        "environment": environment(target.device, target.threads),
    }


def latency_summary(lat: dict[str, Any]) -> str:
    """One line: the target, what was measured, where, and whether the tolerance was met (or the
    machine's noise is too large to tell)."""
    threads = f", {lat['threads']} threads" if lat.get("threads") else ""
    where = f"{lat['backend']} {lat['precision']} on {lat['device']}, batch {lat['batch']}{threads}"
    tol = lat["tolerance"]
    il = lat.get("interleaved")  # absent from records made before the interleaved check
    if il is not None and lat.get("noise_exceeds_tolerance"):
        verdict = f"the machine's run-to-run spread, {il['spread']:.1%}, exceeds the {tol:.0%} tolerance"
    elif lat["within_tolerance"]:
        verdict = f"within {tol:.0%}"
    else:
        verdict = f"NOT within {tol:.0%}: the closest reachable level"
    measured = f"measured {lat['measured_ms']:.2f} ms"
    if il is not None:
        measured += (
            f", {il['ratio']:.3f} of the unpruned network timed in the same loop (target {lat['target_ratio']:.3f}, "
            f"spread {il['spread']:.1%})"
        )
    return f"target {lat['target_ms']:g} ms, {measured} ({where}; {verdict})"
