"""The demo's training loop before and after the training speed-ups, interleaved in one run.

Variants (``--variants``, all on the same rendered data, each training its own copy of the same model in
its own process, so that each has its own memory allocator settings):

- ``before``: the previous release. A ``DataLoader`` whose ``num_workers`` processes read and decode every
  image every epoch and augment it alone with torchvision's PIL transforms; NCHW; glibc's default malloc.
- ``data``: images decoded once into memory and augmented a batch at a time (the same draws).
- ``after``: ``data`` with freed memory kept for reuse (``train._malloc``): what ``reidcompress train``
  and the demo do on a CPU.
- ``after-cl``: ``after`` in channels-last (``--channels-last``): faster, but not the same numbers.

``before``, ``data`` and ``after`` train bit-identical models with ``--workers`` 1 or more (the loss column
shows it; with 0, ``before`` draws from torch's global generator and differs); ``after-cl``
rounds differently. Epochs alternate between variants (``before`` epoch 1, ``after`` epoch 1, ``before``
epoch 2, ...), so load from elsewhere on the machine hits them alike; the ratios per round are the
numbers to compare. Each epoch runs the engine's own epoch loop (``train.engine``) with the demo's
hyper-parameters and reports images/s and where the time went: waiting for the next batch (reading,
decoding and augmenting included), forward + loss, backward, optimiser step. ``--evaluate`` adds each
variant's rank-1/mAP on the data's query/gallery after its last epoch.

    PYTHONPATH=$PWD python tools/bench_demo.py --threads 2 --epochs 4           # ratios, ~2 min on 2 cores
    PYTHONPATH=$PWD python tools/bench_demo.py --threads 2 --epochs 30 --evaluate --json runs/bench_demo.json
    PYTHONPATH=$PWD python tools/bench_demo.py --variants before,data,after,after-cl

Goal (issue 19): training images/s at least doubled on 2 cores; ``reidcompress demo`` at most 300 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from reidcompress.data.datasets import ReIDDataset, load_dataset
from reidcompress.data.loader import build_train_loader
from reidcompress.data.synth import synthesize
from reidcompress.demo.config import DemoConfig
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.testing import per_image_train_loader
from reidcompress.train import Callback, TrainConfig
from reidcompress.train._malloc import keep_freed_memory
from reidcompress.train.distributed import current_context
from reidcompress.train.engine import Trainer, _run_epoch, evaluate

# name: (where images come from, channels-last, keep freed memory)
VARIANTS = {
    "before": ("files", False, False),
    "data": ("memory", False, False),
    "after": ("memory", False, True),
    "after-cl": ("memory", True, True),
}
STAGES = ("data", "forward", "backward", "optimizer")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class StageTimer(Callback):
    """Splits each step at the engine's callback points; the wait for a batch is what is left of the epoch."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES[1:], 0.0)
        self._t = 0.0

    def _lap(self, stage: str | None) -> None:
        now = time.perf_counter()
        if stage is not None:
            self.seconds[stage] += now - self._t
        self._t = now

    def on_batch_start(self, trainer: Trainer, step: int, batch: Sequence[Any]) -> None:
        self._lap(None)

    def extra_loss(self, trainer: Trainer, feats: torch.Tensor, logits: Any, pids: torch.Tensor) -> None:
        self._lap("forward")  # called once the ID and triplet losses are computed
        return None

    def on_after_backward(self, trainer: Trainer) -> None:
        self._lap("backward")

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        self._lap("optimizer")


@dataclass
class Run:
    """One variant, in the process that trains it: its trainer, loader and stage timer."""

    trainer: Trainer
    loader: Any
    timer: StageTimer
    setup_s: float

    def epoch(self, epoch: int) -> dict[str, float]:
        before, cpu = dict(self.timer.seconds), cpu_seconds()
        row = _run_epoch(self.trainer, self.loader, epoch, show=False)
        cpu = cpu_seconds() - cpu
        stages = {k: self.timer.seconds[k] - before[k] for k in STAGES[1:]}
        stages = {"data": row["time_s"] - sum(stages.values()), **stages}
        images = row["steps"] * self.trainer.config.p * self.trainer.config.k
        rates = {"images_per_s": images / row["time_s"], "cpu_ms_per_image": 1000 * cpu / images}
        return {"seconds": row["time_s"], "loss": row["loss"], **rates, **stages}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loading workers end with each epoch)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def make_run(name: str, ds: ReIDDataset, size: tuple[int, int], config: TrainConfig, seed: int) -> Run:
    data, channels_last, keep_memory = VARIANTS[name]
    if keep_memory:
        keep_freed_memory()
    config = config.replace(channels_last=channels_last)
    torch.manual_seed(seed)
    model = ReIDNet(ReIDConfig(arch=DemoConfig.arch, input_size=size, num_classes=ds.num_train_pids))
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    timer = StageTimer()
    trainer = Trainer(model, config, current_context("cpu"), [timer])
    start = time.perf_counter()
    p, k, workers = config.p, config.k, config.num_workers
    if data == "memory":
        loader: Any = build_train_loader(ds.train, size, p, k, num_workers=workers, seed=config.seed)
    else:
        loader = per_image_train_loader(ds.train, size, p, k, seed=config.seed, num_workers=workers)
    trainer.loader = loader
    return Run(trainer, loader, timer, time.perf_counter() - start)


def serve(conn: Connection, name: str, root: Path, config: TrainConfig, seed: int, threads: int, method: str) -> None:
    """A variant's process: build its run, then train an epoch or evaluate each time it is asked."""
    # A spawned process spawns its own children too; loading workers start as they would in the parent.
    mp.set_start_method(method, force=True)
    torch.set_num_threads(threads)
    ds = load_dataset(root)
    run = make_run(name, ds, DemoConfig.input_size, config, seed)
    conn.send(run.setup_s)
    while (msg := conn.recv()) is not None:
        if msg == "evaluate":
            conn.send(evaluate(run.trainer.model, ds, 64, torch.device("cpu")))
        else:
            conn.send(run.epoch(int(msg)))


@dataclass
class Variant:
    """A variant seen from the benchmark: the connection to its process and its per-epoch rows."""

    name: str
    conn: Connection
    process: Any
    setup_s: float = 0.0
    epochs: list[dict[str, float]] = field(default_factory=list)

    def ask(self, msg: Any) -> Any:
        self.conn.send(msg)
        return self.conn.recv()


def start(names: Sequence[str], root: Path, config: TrainConfig, seed: int, threads: int) -> list[Variant]:
    ctx = mp.get_context("spawn")  # a fresh interpreter each: no allocator setting leaks between variants
    variants = []
    for name in names:
        mine, theirs = ctx.Pipe()
        args = (theirs, name, root, config, seed, threads, mp.get_start_method())
        proc = ctx.Process(target=serve, args=args, daemon=False)  # daemons may not start loading workers
        proc.start()
        theirs.close()  # so that a variant dying shows here as end-of-file instead of a wait forever
        variants.append(Variant(name, mine, proc))
    return variants


def stop(variants: Sequence[Variant]) -> None:
    for v in variants:
        if v.process.is_alive():
            with contextlib.suppress(OSError):  # it ended between the check and the send
                v.conn.send(None)
        v.process.join(timeout=30)
        if v.process.is_alive():
            v.process.terminate()


def demo_config(epochs: int, ids: int, seed: int, workers: int) -> TrainConfig:
    # The demo's training recipe (demo/pipeline.py: _Demo.train_config).
    return TrainConfig.for_epochs(
        epochs,
        lr=DemoConfig.lr,
        schedule="cosine",
        warmup_epochs=1,
        num_workers=workers,
        eval_every=0,
        seed=seed,
        p=min(16, ids),
    )


def rounds(variants: Sequence[Variant], epochs: int) -> Iterator[int]:
    # One variant trains while the others wait: they take turns, epoch by epoch.
    for epoch in range(epochs):
        for v in variants:
            r = v.ask(epoch)
            v.epochs.append(r)
            parts = "  ".join(f"{k} {r[k]:.2f}" for k in STAGES)
            rate = f"{r['images_per_s']:6.0f} img/s  {r['cpu_ms_per_image']:5.2f} CPU ms/img  loss {r['loss']:.6f}"
            log(f"epoch {epoch + 1:>2} {v.name:<8} {r['seconds']:6.2f} s  {rate}  ({parts})")
        yield epoch


def summarise(variants: Sequence[Variant], skip: int) -> dict[str, Any]:
    base = variants[0]
    out: dict[str, Any] = {}
    for v in variants:
        kept = v.epochs[skip:] or v.epochs
        ratios = [b["seconds"] / r["seconds"] for b, r in zip(base.epochs[skip:], kept, strict=False)]
        out[v.name] = {
            "setup_s": v.setup_s,
            "images_per_s_median": statistics.median(r["images_per_s"] for r in kept),
            "epoch_s_median": statistics.median(r["seconds"] for r in kept),
            "cpu_ms_per_image_median": statistics.median(r["cpu_ms_per_image"] for r in kept),
            "stage_s_mean": {k: statistics.fmean(r[k] for r in kept) for k in STAGES},
            "losses": [r["loss"] for r in v.epochs],
            f"speedup_vs_{base.name}_per_round": ratios,
            f"speedup_vs_{base.name}_median": statistics.median(ratios) if ratios else None,
            "epochs": v.epochs,
        }
    return out


def print_table(summary: dict[str, Any], base: str) -> None:
    head = f"{'variant':<8} {'img/s':>7} {'CPU ms/img':>10} {'epoch s':>8} " + " ".join(f"{k:>9}" for k in STAGES)
    print(head + f" {'setup s':>8} {'last loss':>10}  speedup vs {base} (median, per round)")
    for name, s in summary.items():
        ratios = s[f"speedup_vs_{base}_per_round"]
        stages = " ".join(f"{s['stage_s_mean'][k]:9.2f}" for k in STAGES)
        rates = f"{s['images_per_s_median']:7.0f} {s['cpu_ms_per_image_median']:10.2f}"
        line = f"{name:<8} {rates} {s['epoch_s_median']:8.2f} {stages} {s['setup_s']:8.2f} {s['losses'][-1]:10.6f}"
        print(f"{line}  {s[f'speedup_vs_{base}_median']:.2f}x  [{', '.join(f'{r:.2f}' for r in ratios)}]")
        if "metrics" in s:
            print(f"{'':<8} rank-1 {s['metrics']['rank1']:.2f}  mAP {s['metrics']['mAP']:.2f}")
    same = [n for n, s in summary.items() if s["losses"] == summary[base]["losses"]]
    print(f"bit-identical losses every epoch: {', '.join(same)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads per variant (default 2)")
    p.add_argument("--workers", type=int, default=2, help="loading processes, as the demo (default 2)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per variant (default 4)")
    p.add_argument("--skip", type=int, default=1, help="first epochs left out of the medians (default 1)")
    p.add_argument("--variants", default="before,after", help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--data", type=Path, help="a Market-style dataset (default: the demo's source domain, rendered)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate", action="store_true", help="rank-1/mAP of each variant's model at the end")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not names or any(v not in VARIANTS for v in names):
        p.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    demo = DemoConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "source"
            log(f"rendering the demo's source domain ({demo.ids} ids x {demo.cams} cameras) in {root}")
            kw = dict(ids=demo.ids, cams=demo.cams, images_per_id=demo.images_per_id, seed=args.seed)
            synthesize(root, **kw, style="source", size=demo.input_size)
        ds = load_dataset(root)
        config = demo_config(args.epochs, ds.num_train_pids, args.seed, args.workers)
        log(f"{len(ds.train)} training images, {args.threads} threads, {args.workers} workers")
        variants: list[Variant] = []
        try:
            variants = start(names, root, config, args.seed, args.threads)
            for v in variants:
                v.setup_s = v.conn.recv()
            for _ in rounds(variants, args.epochs):
                pass
            summary = summarise(variants, min(args.skip, args.epochs - 1))
            if args.evaluate:
                for v in variants:
                    summary[v.name]["metrics"] = v.ask("evaluate")
        finally:
            stop(variants)
    size = demo.input_size
    print(f"{len(ds.train)} training images at {size[0]}x{size[1]}, {args.threads} threads, {args.workers} workers")
    print_table(summary, names[0])
    if args.json:
        info = {"threads": args.threads, "workers": args.workers, "epochs": args.epochs, "torch": torch.__version__}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": info, "variants": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
