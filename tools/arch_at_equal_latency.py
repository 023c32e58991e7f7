"""Two architectures at equal latency on the synthetic benchmark, before and after pruning (issue 18).

The user's question: a pruned OSNet or a ResNet50 pruned to the same ONNX Runtime latency, which
re-identifies better? The path is the CLI's, command by command (each is printed):

1. ``data synth``: one synthetic Market-style set; both networks train from scratch on it.
2. ``train`` each architecture, the same epochs, seed and schedule (no pretrained weights can be
   downloaded here, so both start from random weights).
3. ``prune`` the first (``--target-flops``); time the first (unpruned, or pruned with ``--match pruned``)
   and ``prune`` the second to that latency (``--target-latency``, ``--backend onnxruntime``: searched and
   checked interleaved). A ResNet50 is several times slower than an OSNet: the default asks what a
   ResNet50 pruned to an OSNet's latency re-identifies, beside the OSNet and the OSNet pruned.
4. ``finetune`` both pruned models (new ID classifier, distilled from their unpruned model).
5. ``evaluate`` all four and ``bench`` them interleaved in one run (ONNX Runtime fp32).

    PYTHONPATH=$PWD python tools/arch_at_equal_latency.py --work runs/equal-latency --threads 1 \\
        --doc docs/osnet_vs_resnet50_synthetic.md

Every stage's output is kept in ``--work`` and reused while it exists. The defaults (64x32, 150
identities x 16 images, 40 + 40 epochs, about 45 minutes on one core) are the smallest found here at
which both networks learn from random weights: 12 epochs at 128x64 and 40 at 64x32 on 100 identities x 8
images, or 8 epochs on 150 x 16, stayed at chance rank-1.
A CPU-sized comparison of the two, not Market-1501's numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def cli(command: str) -> dict[str, Any]:
    """Run ``reidcompress COMMAND --json`` as a user would (paths quoted with ``q``), echoing it; its JSON."""
    args = shlex.split(command)
    print(f"$ reidcompress {command}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "reidcompress", *args, "--json"], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"error: reidcompress {args[0]} exited {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def q(path: Path) -> str:
    return shlex.quote(str(path))


def cached(path: Path, make: Any, *, writes: bool = True) -> dict[str, Any]:
    """``make()``'s JSON, kept beside ``path`` so that a re-run reuses the stage.

    ``writes``: the stage writes ``path`` (reused only while it exists); otherwise its JSON is all it makes.
    """
    record = path.with_suffix(path.suffix + ".json")
    if record.exists() and (path.exists() or not writes):
        return json.loads(record.read_text())
    out = make()
    record.write_text(json.dumps(out))
    return out


def onnx_of(ckpt: Path) -> Path:
    """``ckpt`` exported to fp32 ONNX beside it (ONNX Runtime is what the latencies are of)."""
    out = ckpt.with_suffix(".onnx")
    if not out.exists():
        cli(f"export {q(ckpt)} -o {q(out)}")
    return out


def p50(bench_out: dict[str, Any], model: Path, batch: int) -> float:
    rows = [r for r in bench_out["results"] if Path(r["model"]) == model and r["batch"] == batch]
    return float(rows[0]["p50_ms"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    work, a = args.work, args
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not data.exists():
        cli(f"data synth {q(data)} --ids {a.ids} --images-per-id {a.images_per_id} --size {a.size}")
    first, second = a.archs
    ckpt = {arch: work / f"{arch}.pt" for arch in a.archs}
    pruned = {arch: work / f"{arch}-pruned.pt" for arch in a.archs}
    tuned = {arch: work / f"{arch}-pruned-ft.pt" for arch in a.archs}
    train = f"--epochs {a.epochs} --schedule cosine --lr 1e-3 --input-size {a.size} --seed {a.seed} --no-eval"
    for arch in a.archs:
        cached(ckpt[arch], lambda arch=arch: cli(f"train --data {q(data)} --arch {arch} --out {q(ckpt[arch])} {train}"))
    scope = "--residual" if a.residual else "--no-residual"
    prune = f"--method {a.method} {scope}"
    cached(
        pruned[first],
        lambda: cli(f"prune {q(ckpt[first])} {prune} --target-flops {a.target_flops} --out {q(pruned[first])}"),
    )
    if a.train_only:  # the timed stages want an otherwise idle machine: run them later, training is kept
        sys.exit(0)
    first_onnx = onnx_of(ckpt[first] if a.match == "unpruned" else pruned[first])
    speed = cached(
        work / f"first-{a.match}-latency",
        lambda: cli(f"bench {q(first_onnx)} --batch-sizes {a.batch} --threads {a.threads} --runs {a.runs}"),
        writes=False,
    )
    target_ms = p50(speed, first_onnx, a.batch)
    timing = f"--backend onnxruntime --batch {a.batch} --threads {a.threads}"
    prune_second = cached(
        pruned[second],
        lambda: cli(
            f"prune {q(ckpt[second])} {prune} --target-latency {target_ms:.2f} {timing} --out {q(pruned[second])}"
        ),
    )
    finetune = f"--epochs {a.finetune_epochs} --lr 1e-3 --schedule cosine --seed {a.seed} --no-eval"
    for arch in a.archs:
        cached(
            tuned[arch],
            lambda arch=arch: cli(
                f"finetune {q(pruned[arch])} --data {q(data)} --teacher {q(ckpt[arch])} --out {q(tuned[arch])} "
                + finetune
            ),
        )
    models = [m for arch in a.archs for m in (ckpt[arch], pruned[arch], tuned[arch])]
    scores = {str(m): cli(f"evaluate {q(m)} --data {q(data)}") for m in models}
    onnx = " ".join(q(onnx_of(m)) for m in [*ckpt.values(), *tuned.values()])
    bench = cli(f"bench {onnx} --batch-sizes 1,{a.batch} --threads {a.threads} --runs {a.runs}")
    return {"target_ms": target_ms, "scores": scores, "bench": bench, "second_prune": prune_second}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    first, second = args.archs
    bench, scores = result["bench"], result["scores"]
    lines = [
        f"| model | GFLOPs | ORT p50 ms b1 / b{args.batch} | rank-1 | mAP |",
        "|---|---|---|---|---|",
    ]
    for arch in (first, second):
        for tag, path in (
            ("trained", f"{arch}.pt"),
            ("pruned", f"{arch}-pruned.pt"),
            ("pruned + fine-tuned", f"{arch}-pruned-ft.pt"),
        ):
            model = args.work / path
            s = scores[str(model)]
            timed = model.with_suffix(".onnx")
            rows = [r for r in bench["results"] if Path(r["model"]) == timed]
            gflops = f"{rows[0]['flops'] / 1e9:.3f}" if rows else "as below"
            ms = f"{p50(bench, timed, 1):.1f} / {p50(bench, timed, args.batch):.1f}" if rows else "as below"
            lines.append(f"| `{arch}` {tag} | {gflops} | {ms} | {s['rank1']:.2f} | {s['mAP']:.2f} |")
    return lines


def intro(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    from reidcompress.prune.latency import latency_summary

    first, second = args.archs
    lat = result["second_prune"].get("latency_target")
    how = latency_summary(lat) if lat else "(no latency record)"
    return [
        f"Synthetic data (`data synth`, {args.ids} identities, {args.images_per_id} images each, {args.size}); "
        f"both trained from random weights for {args.epochs} epochs (Adam, lr 1e-3, cosine, seed {args.seed}). "
        f"`{first}` pruned with `{args.method} --target-flops {args.target_flops}`; `{second}` pruned with "
        f"`{args.method}` to the {args.match} `{first}`'s ONNX Runtime latency at batch {args.batch} "
        f"({result['target_ms']:.2f} ms, {args.threads} threads): {how}. Both pruned models fine-tuned "
        f"{args.finetune_epochs} epochs with a new ID classifier, distilled from their unpruned model. Latencies: "
        "ONNX Runtime fp32, the four models timed interleaved in one `bench` run.",
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/equal-latency"))
    ap.add_argument("--doc", type=Path, help="write the table here (markdown)")
    ap.add_argument("--archs", nargs=2, default=["osnet_x1_0", "resnet50"], metavar=("FIRST", "SECOND"))
    ap.add_argument("--size", default="64x32")
    ap.add_argument("--ids", type=int, default=150)
    ap.add_argument("--images-per-id", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=40)
    ap.add_argument("--method", default="hao_li")
    ap.add_argument("--target-flops", type=float, default=0.5, help="of FIRST; SECOND is pruned to its latency")
    ap.add_argument("--match", choices=["unpruned", "pruned"], default="unpruned",
                    help="SECOND is pruned to the latency of FIRST unpruned (default) or of FIRST pruned")  # fmt: skip
    ap.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False, help="prune's --residual")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-only", action="store_true", help="stop before the first timing (run again to go on)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run(args)
    (args.work / "result.json").write_text(json.dumps(result, indent=1))
    table = markdown(result, args)
    print("\n".join(table))
    if args.doc:
        command = "PYTHONPATH=$PWD python tools/arch_at_equal_latency.py " + shlex.join(argv or sys.argv[1:])
        body = [
            f"# {args.archs[0]} against {args.archs[1]} at equal latency (synthetic)",
            "",
            *intro(result, args),
            "",
            *table,
            "",
            f"Reproduce: `{command}`",
            "",
        ]
        args.doc.write_text("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
