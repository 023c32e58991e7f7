"""The end-to-end demo: synthetic source/target domains -> train -> fine-tune -> prune -> fine-tune
-> export -> verify -> report, on a CPU in minutes, reusing finished stages when re-run."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from reidcompress.data.datasets import ReIDDataset, load_dataset
from reidcompress.data.synth import synthesize
from reidcompress.demo.config import DemoConfig
from reidcompress.demo.stages import StageRunner
from reidcompress.evaluation.features import evaluate_embedder
from reidcompress.export.onnx import export_onnx
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.prune.api import load_prune_data, prune_model
from reidcompress.prune.options import PruneOptions
from reidcompress.runtime import TorchEmbedder
from reidcompress.train.config import TrainConfig
from reidcompress.train.engine import RunPaths, train
from reidcompress.verify.api import Tolerances, verify

__all__ = ["run_demo"]


class _Demo:
    def __init__(self, cfg: DemoConfig, console: Console) -> None:
        self.cfg = cfg
        self.w = Path(cfg.workdir)
        self.console = console
        self.stages = StageRunner(self.w, console)
        self.keys: dict[str, str] = {}

    def key(self, name: str, upstream: str | None, *fields: str) -> str:
        self.keys[name] = self.cfg.stage_key(*fields) + (self.keys[upstream] if upstream else "")
        return self.keys[name]

    def dataset(self, style: str) -> ReIDDataset:
        return load_dataset(self.w / "data" / style)

    def metrics(self, model: ReIDNet, style: str) -> dict[str, float]:
        res = evaluate_embedder(TorchEmbedder(model), self.dataset(style), progress=False)
        return {k: round(v, 2) for k, v in res.items()}

    def train_config(self, epochs: int, ids: int) -> TrainConfig:
        # From-scratch training on a CPU: a higher lr and a cosine schedule than the ImageNet-pretrained recipe.
        c = self.cfg
        return TrainConfig.for_epochs(
            epochs,
            lr=c.lr,
            schedule="cosine",
            warmup_epochs=1,
            num_workers=2,
            eval_every=0,
            seed=c.seed,
            p=min(16, ids),
        )

    def fit(self, model: ReIDNet, style: str, epochs: int, out: Path, teacher: ReIDNet | None = None):
        resume = self.stages.resuming and RunPaths.beside(out).state.exists()
        if not resume:
            for p in (RunPaths.beside(out).state, RunPaths.beside(out).log):
                p.unlink(missing_ok=True)
        ds = self.dataset(style)
        train(
            model,
            ds.train,
            self.train_config(epochs, ds.num_train_pids),
            out=out,
            resume=resume,
            teacher=teacher,
            device="cpu",
            progress=True,
            meta={"dataset": f"synthetic {style}", "demo": True},
        )
        return load_model(out)


def _data(d: _Demo) -> dict[str, Any]:
    c = d.cfg
    for style, seed in (("source", c.seed), ("target", c.seed + 1)):
        synthesize(
            d.w / "data" / style,
            ids=c.ids,
            cams=c.cams,
            images_per_id=c.images_per_id,
            seed=seed,
            style=style,
            size=c.input_size,
            overwrite=True,
        )
    return {style: d.dataset(style).summary() for style in ("source", "target")}


def _train_source(d: _Demo) -> dict[str, Any]:
    c, ds = d.cfg, d.dataset("source")
    torch.manual_seed(c.seed)
    model = ReIDNet(ReIDConfig(arch=c.arch, input_size=c.input_size, num_classes=ds.num_train_pids))
    model = d.fit(model, "source", c.source_epochs, d.w / "source.pt")
    return {"source": d.metrics(model, "source"), "target_before_finetune": d.metrics(model, "target")}


def _finetune_target(d: _Demo) -> dict[str, Any]:
    model = load_model(d.w / "source.pt")
    model.reset_classifier(d.dataset("target").num_train_pids)
    model = d.fit(model, "target", d.cfg.target_epochs, d.w / "baseline.pt")
    return {"target": d.metrics(model, "target")}


def _prune(d: _Demo) -> dict[str, Any]:
    c = d.cfg
    model = load_model(d.w / "baseline.pt")
    data = load_prune_data(d.w / "data" / "target")
    options = PruneOptions(target_flops=c.target_flops, round_to=c.round_to, epochs=c.pruned_epochs)
    record = prune_model(model, c.method, options, data)
    save_model(d.w / "pruned_raw.pt", model, pruning=record)
    return {
        "record": {k: v for k, v in record.items() if not isinstance(v, dict)},
        "target": d.metrics(model, "target"),
    }


def _finetune_pruned(d: _Demo) -> dict[str, Any]:
    model = load_model(d.w / "pruned_raw.pt")
    if d.cfg.pruned_new_classifier:
        torch.manual_seed(d.cfg.seed)
        model.reset_classifier(d.dataset("target").num_train_pids)
    teacher = load_model(d.w / "baseline.pt") if d.cfg.distill else None
    model = d.fit(model, "target", d.cfg.pruned_epochs, d.w / "pruned.pt", teacher=teacher)
    return {"target": d.metrics(model, "target")}


def _export(d: _Demo) -> dict[str, Any]:
    out = {}
    for name in ("baseline", "pruned"):
        res = export_onnx(d.w / f"{name}.pt", d.w / f"{name}.onnx", parity_data=d.w / "data" / "target")
        d.console.print(f"{name}.onnx: {res.parity.summary()}")
        out[name] = res.to_dict()
    return out


def _verify(d: _Demo) -> dict[str, Any]:
    from reidcompress.verify.report import write_report

    c, w = d.cfg, d.w
    result = verify(
        w / "baseline.pt",
        [w / "baseline.onnx", w / "pruned.pt", w / "pruned.onnx"],
        w / "data" / "target",
        tolerances=Tolerances(max_rank1_drop=c.max_rank1_drop),
        threads=c.threads,
        latency_batches=(1, c.latency_batch),
        latency_runs=c.latency_runs,
        use_cache=False,
    ).to_dict()
    write_report(result, w / "verify")
    return result


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; returns the summary the CLI prints and the report shows."""
    from reidcompress.demo.report import summarise, write_markdown

    console = console or Console(stderr=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = _Demo(cfg, console)
    d.w.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    w = d.w
    plan = [
        ("data", None, ("ids", "cams", "images_per_id", "input_size", "seed"), [w / "data" / "target"], _data),
        ("train on source", "data", ("arch", "source_epochs", "lr"), [w / "source.pt"], _train_source),
        ("fine-tune on target", "train on source", ("target_epochs",), [w / "baseline.pt"], _finetune_target),
        ("prune", "fine-tune on target", ("method", "target_flops"), [w / "pruned_raw.pt"], _prune),
        (
            "fine-tune pruned",
            "prune",
            ("pruned_epochs", "distill", "pruned_new_classifier"),
            [w / "pruned.pt"],
            _finetune_pruned,
        ),
        ("export", "fine-tune pruned", (), [w / "baseline.onnx", w / "pruned.onnx"], _export),
        (
            "verify",
            "export",
            ("max_rank1_drop", "latency_batch", "latency_runs", "threads"),
            [w / "verify" / "verify.json"],
            _verify,
        ),
    ]
    results = {}
    for name, upstream, fields, outputs, fn in plan:
        key = d.key(name, upstream, *fields)
        results[name] = d.stages.run(name, key, outputs, functools.partial(fn, d))
    summary = summarise(cfg, results, d.stages.seconds(), time.perf_counter() - start)
    summary["report"] = str(write_markdown(w, summary))
    return summary
