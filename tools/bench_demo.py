"""The demo's training loop before and after the data-path and layout changes, interleaved in one run.

Variants (``--variants``, all on the same rendered data, each training its own copy of the same model):

- ``before``: the old path. A ``DataLoader`` whose ``num_workers`` processes read and decode every image
  every epoch and augment it alone with torchvision's PIL transforms; NCHW tensors (channels-last was CUDA-only).
- ``data``: the new data path, NCHW: images decoded once into memory, augmented a batch at a time.
- ``layout``: the old data path, channels-last.
- ``after``: the new data path and channels-last (what ``reidcompress train`` and the demo now do).

Epochs alternate between variants (``before`` epoch 1, ``after`` epoch 1, ``before`` epoch 2, ...), so load
from elsewhere on the machine hits them alike; the ratios per round are the numbers to compare. Each
epoch runs the engine's own epoch loop (``train.engine``) with the demo's hyper-parameters and reports
images/s and where the time went: waiting for the next batch (reading, decoding and augmenting
included), forward + loss, backward, optimiser step. ``--evaluate`` adds each variant's rank-1/mAP on
the data's query/gallery after its last epoch: with ``--epochs 30`` (the demo's ``train on source``
stage) it shows the change trains models as good as before.

    PYTHONPATH=$PWD python tools/bench_demo.py --threads 2 --epochs 4           # ratios, ~2 min on 2 cores
    PYTHONPATH=$PWD python tools/bench_demo.py --threads 2 --epochs 30 --evaluate --json runs/bench_demo.json

Goal (issue 19): training images/s at least doubled on 2 cores; ``reidcompress demo`` at most 300 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from reidcompress.data.datasets import ImageItem, ReIDDataset, load_dataset
from reidcompress.data.loader import ImageDataset, build_train_loader
from reidcompress.data.sampler import PKSampler
from reidcompress.data.synth import synthesize
from reidcompress.data.transforms import pad_for
from reidcompress.demo.config import DemoConfig
from reidcompress.models.reid import IMAGENET_MEAN, ReIDConfig, ReIDNet
from reidcompress.train import Callback, TrainConfig
from reidcompress.train.distributed import current_context
from reidcompress.train.engine import Trainer, _run_epoch, evaluate

VARIANTS = {"before": ("files", False), "data": ("memory", False), "layout": ("files", True), "after": ("memory", True)}
STAGES = ("data", "forward", "backward", "optimizer")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def legacy_loader(items: Sequence[ImageItem], size: tuple[int, int], config: TrainConfig) -> DataLoader:
    """The training loader as it was: per-image PIL decoding and augmentation in the loading workers."""
    transform = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(),
            T.Pad(pad_for(size)),
            T.RandomCrop(size),
            T.ToTensor(),
            T.RandomErasing(p=0.5, value=IMAGENET_MEAN),
        ]
    )
    sampler = PKSampler([it.pid for it in items], config.p, config.k, seed=config.seed)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, 0]).generate_state(1)[0]))
    return DataLoader(
        ImageDataset(items, transform), batch_sampler=sampler, num_workers=config.num_workers, generator=generator
    )


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
    """One variant: its model, trainer, loader and per-epoch measurements."""

    name: str
    trainer: Trainer
    loader: Any
    timer: StageTimer
    setup_s: float
    epochs: list[dict[str, float]] = field(default_factory=list)

    def epoch(self, epoch: int) -> dict[str, float]:
        before, cpu = dict(self.timer.seconds), cpu_seconds()
        row = _run_epoch(self.trainer, self.loader, epoch, show=False)
        cpu = cpu_seconds() - cpu
        stages = {k: self.timer.seconds[k] - before[k] for k in STAGES[1:]}
        stages = {"data": row["time_s"] - sum(stages.values()), **stages}
        images = row["steps"] * self.trainer.config.p * self.trainer.config.k
        rates = {"images_per_s": images / row["time_s"], "cpu_ms_per_image": 1000 * cpu / images}
        self.epochs.append({"seconds": row["time_s"], **rates, **stages})
        return self.epochs[-1]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loading workers end with each epoch)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def make_run(name: str, ds: ReIDDataset, size: tuple[int, int], config: TrainConfig, seed: int) -> Run:
    data, channels_last = VARIANTS[name]
    config = config.replace(channels_last=channels_last)
    torch.manual_seed(seed)
    model = ReIDNet(ReIDConfig(arch=DemoConfig.arch, input_size=size, num_classes=ds.num_train_pids))
    ctx = current_context("cpu")
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    timer = StageTimer()
    trainer = Trainer(model, config, ctx, [timer])
    start = time.perf_counter()
    if data == "memory":
        loader: Any = build_train_loader(
            ds.train, size, config.p, config.k, num_workers=config.num_workers, seed=config.seed
        )
    else:
        loader = legacy_loader(ds.train, size, config)
    trainer.loader = loader
    return Run(name, trainer, loader, timer, time.perf_counter() - start)


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


def rounds(runs: Sequence[Run], epochs: int) -> Iterator[int]:
    for epoch in range(epochs):
        for run in runs:
            r = run.epoch(epoch)
            parts = "  ".join(f"{k} {r[k]:.2f}" for k in STAGES)
            rate = f"{r['images_per_s']:6.0f} img/s  {r['cpu_ms_per_image']:5.2f} CPU ms/img"
            log(f"epoch {epoch + 1:>2} {run.name:<7} {r['seconds']:6.2f} s  {rate}  ({parts})")
        yield epoch


def summarise(runs: Sequence[Run], skip: int) -> dict[str, Any]:
    base = runs[0]
    out: dict[str, Any] = {}
    for run in runs:
        kept = run.epochs[skip:] or run.epochs
        ratios = [b["seconds"] / r["seconds"] for b, r in zip(base.epochs[skip:], kept, strict=False)]
        out[run.name] = {
            "setup_s": run.setup_s,
            "images_per_s_median": statistics.median(r["images_per_s"] for r in kept),
            "epoch_s_median": statistics.median(r["seconds"] for r in kept),
            "cpu_ms_per_image_median": statistics.median(r["cpu_ms_per_image"] for r in kept),
            "stage_s_mean": {k: statistics.fmean(r[k] for r in kept) for k in STAGES},
            f"speedup_vs_{base.name}_per_round": ratios,
            f"speedup_vs_{base.name}_median": statistics.median(ratios) if ratios else None,
            "epochs": run.epochs,
        }
    return out


def print_table(summary: dict[str, Any], base: str) -> None:
    head = f"{'variant':<8} {'img/s':>7} {'CPU ms/img':>10} {'epoch s':>8} " + " ".join(f"{k:>9}" for k in STAGES)
    print(head + f" {'setup s':>8}  speedup vs {base} (median, per round)")
    for name, s in summary.items():
        ratios = s[f"speedup_vs_{base}_per_round"]
        stages = " ".join(f"{s['stage_s_mean'][k]:9.2f}" for k in STAGES)
        rates = f"{s['images_per_s_median']:7.0f} {s['cpu_ms_per_image_median']:10.2f}"
        line = f"{name:<8} {rates} {s['epoch_s_median']:8.2f} {stages} {s['setup_s']:8.2f}"
        print(f"{line}  {s[f'speedup_vs_{base}_median']:.2f}x  [{', '.join(f'{r:.2f}' for r in ratios)}]")
        if "metrics" in s:
            print(f"{'':<8} rank-1 {s['metrics']['rank1']:.2f}  mAP {s['metrics']['mAP']:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned; default 2)")
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
    torch.set_num_threads(args.threads)
    demo = DemoConfig()
    size = demo.input_size
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "source"
            log(f"rendering the demo's source domain ({demo.ids} ids x {demo.cams} cameras) in {root}")
            kw = dict(ids=demo.ids, cams=demo.cams, images_per_id=demo.images_per_id, seed=args.seed)
            synthesize(root, **kw, style="source", size=size)
        ds = load_dataset(root)
        config = demo_config(args.epochs, ds.num_train_pids, args.seed, args.workers)
        log(f"{len(ds.train)} training images, {torch.get_num_threads()} threads, {args.workers} workers")
        runs = [make_run(name, ds, size, config, args.seed) for name in names]
        for _ in rounds(runs, args.epochs):
            pass
        summary = summarise(runs, min(args.skip, args.epochs - 1))
        if args.evaluate:
            for run in runs:
                summary[run.name]["metrics"] = evaluate(run.trainer.model, ds, 64, torch.device("cpu"))
    print(f"{len(ds.train)} training images at {size[0]}x{size[1]}, {args.threads} threads, {args.workers} workers")
    print_table(summary, names[0])
    if args.json:
        info = {"threads": args.threads, "workers": args.workers, "epochs": args.epochs, "torch": torch.__version__}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": info, "variants": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
