"""The demo's summary table, Markdown report and plots (training curves, rank-1 vs latency)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from reidcompress._io import atomic_write_text, save_figure
from reidcompress.demo.config import DemoConfig
from reidcompress.verify.report import model_rows

__all__ = ["summarise", "summary_table", "write_markdown"]

ROWS = (
    ("baseline.pt", "baseline", "PyTorch"),
    ("baseline.onnx", "baseline", "ORT"),
    ("pruned.pt", "pruned", "PyTorch"),
    ("pruned.onnx", "pruned", "ORT"),
)


def summarise(cfg: DemoConfig, results: dict[str, Any], seconds: dict[str, float], wall: float) -> dict[str, Any]:
    by_name = {r["model"]: r for r in model_rows(results["verify"])}
    base_torch = by_name["baseline.pt"]
    rows = []
    for file, model, backend in ROWS:
        r = by_name[file]
        rows.append(
            {
                "model": model,
                "backend": backend,
                "file": file,
                "params": r["params"],
                "flops": r["flops"],
                "rank1": r["rank1"],
                "mAP": r["mAP"],
                "p50_b1_ms": r["p50_b1_ms"],
                "p50_bn_ms": r["p50_bn_ms"],
                "batch": r["batch"],
                "speedup": base_torch["p50_bn_ms"] / r["p50_bn_ms"] if r["p50_bn_ms"] else None,
                "rank1_drop": r["rank1_drop"],
            }
        )
    record = results["prune"]["record"]
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
        "rows": rows,
        "flops_ratio": record["flops_ratio"],
        "passed": results["verify"]["passed"],
        "context": {
            "source_model_on_source": results["train on source"]["source"],
            "source_model_on_target": results["train on source"]["target_before_finetune"],
            "baseline_on_target": results["fine-tune on target"]["target"],
            "pruned_before_finetune": results["prune"]["target"],
            "pruned_after_finetune": results["fine-tune pruned"]["target"],
        },
        "environment": results["verify"]["environment"],
        "stage_seconds": seconds,
        "wall_seconds": wall,
    }


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_table(s: dict[str, Any]) -> Table:
    # Borderless and short headers: the whole table fits an 80-column terminal or CI log untruncated.
    batch = s["rows"][0]["batch"] if s["rows"] else "N"
    t = Table(
        title=f"reidcompress demo: {s['config']['method']} at {s['flops_ratio']:.2f}x FLOPs "
        f"({'verify passed' if s['passed'] else 'verify FAILED'})",
        caption="latency p50 on this machine; speedup at batch " + f"{batch} vs baseline PyTorch",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for col in ("model", "runtime", "params M", "GFLOPs", "rank-1", "mAP", "ms b1", f"ms b{batch}", "speedup"):
        t.add_column(col, justify="left" if col in ("model", "runtime") else "right", no_wrap=True)
    for r in s["rows"]:
        t.add_row(
            r["model"],
            r["backend"],
            _f(r["params"] / 1e6, ".3f"),
            _f(r["flops"] / 1e9, ".3f"),
            _f(r["rank1"], ".2f"),
            _f(r["mAP"], ".2f"),
            _f(r["p50_b1_ms"], ".2f"),
            _f(r["p50_bn_ms"], ".2f"),
            f"{_f(r['speedup'], '.2f')}x",
        )
    return t


def _markdown_table(s: dict[str, Any]) -> list[str]:
    lines = [
        "| model | runtime | params (M) | GFLOPs | rank-1 | mAP | p50 ms b1 | p50 ms bN | speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['params'] / 1e6:.3f} | {r['flops'] / 1e9:.3f} | "
            f"{r['rank1']:.2f} | {r['mAP']:.2f} | {_f(r['p50_b1_ms'], '.2f')} | "
            f"{_f(r['p50_bn_ms'], '.2f')} (b{r['batch']}) | {_f(r['speedup'], '.2f')}x |"
        )
    return lines


def _plots(workdir: Path, s: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (
        ("source", "train on source"),
        ("baseline", "fine-tune on target"),
        ("pruned", "fine-tune pruned"),
    ):
        log = workdir / f"{name}.log.jsonl"
        if log.exists():
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], label=label)
    ax.set(xlabel="epoch", ylabel="training loss (ID + triplet)", title="training curves")
    ax.legend()
    fig.tight_layout()
    _save(fig, workdir / "training_curves.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in s["rows"]:
        ax.scatter(r["p50_bn_ms"], r["rank1"], s=60, marker="o" if r["backend"] == "PyTorch" else "s")
        ax.annotate(
            f"{r['model']} ({r['backend']})",
            (r["p50_bn_ms"], r["rank1"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(4, 4),
        )
    ax.set(
        xlabel=f"p50 latency at batch {s['rows'][0]['batch']} (ms)",
        ylabel="rank-1 (%)",
        title="rank-1 vs latency (target domain)",
    )
    fig.tight_layout()
    _save(fig, workdir / "rank1_vs_latency.png")
    plt.close("all")
    return ["training_curves.png", "rank1_vs_latency.png"]


def _save(fig: Any, path: Path) -> None:
    save_figure(fig, path, dpi=110)


def write_markdown(workdir: Path, s: dict[str, Any]) -> Path:
    c, ctx, env = s["config"], s["context"], s["environment"]
    plots = _plots(workdir, s)
    lines = [
        "# reidcompress demo report",
        "",
        f"A `{c['arch']}` ReID ResNet at {c['input_size'][0]}x{c['input_size'][1]}, trained on a synthetic source "
        f"domain, fine-tuned on a synthetic target domain ({c['ids']} identities x {c['cams']} cameras each), "
        f"pruned with `{c['method']}` to {s['flops_ratio']:.2f}x the FLOPs and fine-tuned again"
        + (" with distillation from the unpruned model" if c["distill"] else "")
        + ". Accuracy is on the target "
        "domain's query/gallery (Market-1501 protocol); latency on "
        f"{env.get('gpu') or env['cpu']} ({env['threads']} threads).",
        "",
        *_markdown_table(s),
        "",
        f"Verify (rank-1 may drop at most {c['max_rank1_drop']} points): **{'passed' if s['passed'] else 'FAILED'}**;"
        " details in [verify/verify.md](verify/verify.md).",
        "",
        "## Along the way (target domain unless said)",
        "",
        f"- source model on its own domain: rank-1 {ctx['source_model_on_source']['rank1']:.2f}, "
        f"mAP {ctx['source_model_on_source']['mAP']:.2f}",
        f"- source model on the target domain, before fine-tuning: rank-1 {ctx['source_model_on_target']['rank1']:.2f}"
        f", mAP {ctx['source_model_on_target']['mAP']:.2f}",
        f"- after fine-tuning on the target (baseline): rank-1 {ctx['baseline_on_target']['rank1']:.2f}, "
        f"mAP {ctx['baseline_on_target']['mAP']:.2f}",
        f"- pruned, before fine-tuning: rank-1 {ctx['pruned_before_finetune']['rank1']:.2f}, "
        f"mAP {ctx['pruned_before_finetune']['mAP']:.2f}",
        f"- pruned, after fine-tuning: rank-1 {ctx['pruned_after_finetune']['rank1']:.2f}, "
        f"mAP {ctx['pruned_after_finetune']['mAP']:.2f}",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        "## Stage times",
        "",
        *[f"- {k}: {v:.0f} s" for k, v in s["stage_seconds"].items()],
        f"- total this run: {s['wall_seconds']:.0f} s (finished stages are reused on re-runs)",
        "",
    ]
    return atomic_write_text(workdir / "REPORT.md", "\n".join(lines))
