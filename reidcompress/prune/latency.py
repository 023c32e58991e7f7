"""Latency-budget pruning: search the pruning level until the latency measured on a backend meets a target.

Engineers ship for "8 ms at batch 8 on this device", not for "rate 0.5". The search runs over FLOPs
targets of a one-shot method (one rate for all groups, or per-layer rates from a sensitivity
profile), prunes a copy of the network at each level and measures it as deployed: exported to ONNX
and run in ONNX Runtime, run in PyTorch, or built into a TensorRT engine, always timed by
``verify.latency`` (the code ``bench`` and ``verify`` use). Latency is close to affine in FLOPs on a
given backend, so each new level interpolates between the two closest measurements on either side of
the target. Channel scores are computed once on the unpruned network; the best level's plan is then
applied to the network itself, so the result is exactly the network that was measured.
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
from typing import Any

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
from reidcompress.verify.latency import MEASURE_SPINNING, Clock, LatencyStats, embedder_latency

__all__ = [
    "BACKENDS",
    "LatencyTarget",
    "BackendTimer",
    "Trial",
    "check_latency_request",
    "prune_for_latency",
    "search_latency",
    "latency_summary",
]

BACKENDS = ("onnxruntime", "torch", "tensorrt")
TRT_PRECISION = "fp16"  # what a TensorRT deployment of a ReID net runs at; INT8 needs calibration data

Timer = Callable[[ReIDNet], LatencyStats]


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
        if not 0 < self.tolerance < 1 or self.max_trials < 1 or self.runs < 1 or self.warmup < 0:
            raise InputError("need 0 < tolerance < 1, max_trials >= 1, runs >= 1 and warmup >= 0")
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
class Trial:
    """One measured pruning level: the FLOPs target asked for, the planned network's FLOPs, its latency."""

    requested: float
    flops_ratio: float
    kept: Mapping[str, int]
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
            kept = plan_kept(
                self.model, self.groups, self.criterion, self.options, flops=requested * self.flop_model.total
            )
        ratio = self.flop_model.estimate(self.groups, kept) / self.flop_model.total
        pruned = copy.deepcopy(self.model)
        apply_plan(pruned, select_channels(self.groups, kept))
        return Trial(ratio if requested is None else requested, ratio, dict(kept), self.timer(pruned))


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
    outcome = _search(_Search(model, groups, options, criterion, timer), target, spec.name, log or (lambda _: None))
    best = outcome.best
    apply_plan(model, select_channels(groups, best.kept))
    if options.finetune_epochs and data is not None:
        data.fit(model, options.finetune_epochs)
    level = dataclasses.replace(options, target_flops=best.requested)
    record = pruning_record(model, spec, level, StrategyResult.of(groups), before)
    record["latency_target"] = _latency_record(target, outcome, getattr(timer, "device_name", None))
    # The FLOPs level is only the search's handle; the target the user gave is the latency.
    record["target_met"] = record["latency_target"]["within_tolerance"]
    return record


def _latency_record(target: LatencyTarget, outcome: _Outcome, device: str | None) -> dict[str, Any]:
    from reidcompress.verify.environment import cpu_name, environment

    device = device or target.device
    best = outcome.best
    return {
        "target_ms": target.target_ms,
        "measured_ms": best.ms,
        "p95_ms": best.stats.p95_ms,
        "within_tolerance": _met(best, target),
        "tolerance": target.tolerance,
        "backend": target.backend,
        "precision": TRT_PRECISION if target.backend == "tensorrt" else "fp32",
        "batch": target.batch,
        "threads": target.threads,
        "device": f"cpu ({cpu_name()})" if device == "cpu" else device,
        "unpruned_ms": outcome.unpruned.ms,
        "trials": [t.to_dict() for t in outcome.history],
        "environment": environment(target.device, target.threads),
    }


def latency_summary(lat: dict[str, Any]) -> str:
    """One line: the target, what was measured, where, and whether the tolerance was met."""
    threads = f", {lat['threads']} threads" if lat.get("threads") else ""
    where = f"{lat['backend']} {lat['precision']} on {lat['device']}, batch {lat['batch']}{threads}"
    verdict = (
        f"within {lat['tolerance']:.0%}"
        if lat["within_tolerance"]
        else f"NOT within {lat['tolerance']:.0%}: the closest reachable level"
    )
    return f"target {lat['target_ms']:g} ms, measured {lat['measured_ms']:.2f} ms ({where}; {verdict})"
