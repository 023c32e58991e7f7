"""The TensorRT and GPU checks this project cannot run without an NVIDIA GPU, in one script and one report.

For anyone with an NVIDIA GPU and TensorRT 10 or 11 (x86, or a Jetson on JetPack 6.1+): builds fp32,
FP16 and INT8 engines of a pruned ResNet50 (256x128) through `reidcompress export --trt`, runs
`reidcompress verify` and `reidcompress bench` on them against the fp32 ONNX model in ONNX Runtime,
runs the `gpu` and `trt` test markers, and writes everything to one Markdown report.

    pip install -e '.[trt,dev]'          # x86; on Jetson, JetPack's TensorRT (docker/Dockerfile.jetson)
    python tools/gpu_check.py --work runs/gpu_check
    python tools/gpu_check.py --work runs/gpu_check --weights models/r50-duke-hl-ft.pt --data data/dukemtmc-reid \\
        --dataset dukemtmcreid           # a real model and dataset instead of synthetic ones

Without ``--weights``, a ResNet50 is fine-tuned for ``--epochs`` on a synthetic dataset (`reidcompress
data synth`) from random initialisation, then pruned to half its FLOPs: enough for embedding parity and
latency, and for rank-1 on the synthetic test split. Each step runs as its own command; a failing
step is recorded and the next ones still run. Send back ``REPORT.md`` and the ``*.log`` files of the
work folder.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TAIL_LINES = 40


@dataclass
class Step:
    name: str
    cmd: list[str]
    rc: int
    seconds: float
    log: Path

    def row(self) -> str:
        verdict = "ok" if self.rc == 0 else f"**exit {self.rc}**"
        return f"| {self.name} | {verdict} | {self.seconds:.0f} s | `{self.log.name}` |"

    def section(self) -> str:
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        return f"### {self.name}\n\n`{shlex.join(self.cmd)}`\n\n```\n{tail}\n```\n"


def run(name: str, cmd: list[str], work: Path) -> Step:
    log = work / f"{len(list(work.glob('*.log'))):02d}-{name.replace(' ', '-')}.log"
    print(f"== {name}: {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    step = Step(name, cmd, rc, time.perf_counter() - start, log)
    print(f"   {'ok' if rc == 0 else f'exit {rc}'} in {step.seconds:.0f} s ({log})", flush=True)
    return step


def environment() -> str:
    lines = [f"- python {sys.version.split()[0]}, {platform.platform()}"]
    probes = {
        "torch": "import torch; print(torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() "
        "and torch.cuda.get_device_name(0), torch.cuda.is_available() and torch.cuda.get_device_capability(0))",
        "tensorrt": "import tensorrt as trt; print(trt.__version__, 'STRONGLY_TYPED' if hasattr("
        "trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED') else '-', 'FP16 flag' if hasattr(trt.BuilderFlag, "
        "'FP16') else 'no FP16 flag')",
        "onnxruntime": "import onnxruntime as ort; print(ort.__version__, ort.get_available_providers())",
        "polygraphy": "import polygraphy; print(polygraphy.__version__)",
    }
    for name, code in probes.items():
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        out = (res.stdout or res.stderr).strip().splitlines()
        lines.append(f"- {name}: {out[-1] if out else '?'}")
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines.append(f"- nvidia-smi: {smi.stdout.strip() or smi.stderr.strip() or 'not found'}")
    return "\n".join(lines)


def make_model(args: argparse.Namespace, work: Path, rc: list[str], steps: list[Step]) -> tuple[Path, Path, str]:
    """(pruned checkpoint, dataset, dataset layout): the given ones, or a synthetic set and a trained ResNet50."""
    if args.data is None:
        data = work / "data"
        steps.append(run("synthetic data", [*rc, "data", "synth", str(data), "--ids", "100", "--size",
                                             args.input_size, "--overwrite"], work))  # fmt: skip
        dataset = "market1501"
    else:
        data, dataset = Path(args.data), args.dataset
    ckpt = Path(args.weights) if args.weights else work / "resnet50.pt"
    if not args.weights:
        steps.append(run("train ResNet50", [*rc, "train", "--data", str(data), "--dataset", dataset, "--arch",
                                            "resnet50", "--input-size", args.input_size, "--epochs", str(args.epochs),
                                            "--device", "cuda", "--out", str(ckpt)], work))  # fmt: skip
    pruned = work / "pruned.pt"
    steps.append(run("prune", [*rc, "prune", str(ckpt), "--method", "hao_li", "--target-flops", "0.5",
                               "--out", str(pruned)], work))  # fmt: skip
    return pruned, data, dataset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("runs/gpu_check"))
    p.add_argument("--weights", help="reidcompress checkpoint to prune (default: train a ResNet50 on --data)")
    p.add_argument("--data", help="dataset folder (default: a synthetic one)")
    p.add_argument("--dataset", default="market1501")
    p.add_argument("--input-size", default="256x128")
    p.add_argument("--epochs", type=int, default=10, help="training epochs without --weights")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m 'gpu or trt'")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rc = [sys.executable, "-m", "reidcompress"]
    steps: list[Step] = []
    pruned, data, dataset = make_model(args, work, rc, steps)
    onnx = work / "pruned.onnx"
    calib = ["--calib-data", str(data), "--dataset", dataset, "--data", str(data)]
    engines = []
    for precision in ("fp32", "fp16", "int8"):
        engine = work / f"pruned.{precision}.engine"
        engines.append(engine)
        steps.append(run(f"export {precision} engine", [*rc, "export", str(pruned), "-o", str(onnx), "--trt",
                                                         "--precision", precision, "--engine", str(engine),
                                                         *calib, "--json"], work))  # fmt: skip
    gated = [work / "pruned.fp16.onnx", work / "pruned.qdq.onnx"]
    candidates = [str(m) for m in [*engines, *gated] if m.exists()]
    verify = [*rc, "verify", "--reference", str(onnx), "--data", str(data), "--dataset", dataset,
              "--report", str(work / "verify")]  # fmt: skip
    for c in candidates:
        verify += ["--candidate", c]
    steps.append(run("verify engines vs ONNX Runtime", verify, work))
    # The ONNX model runs in ONNX Runtime on the CPU (the reference the gates used); the engines on the GPU.
    bench = [*rc, "bench", str(onnx), *[str(e) for e in engines if e.exists()], "--batch-sizes", "1,8,32",
             "--plot", str(work / "latency.png")]  # fmt: skip
    steps.append(run("bench", bench, work))
    if not args.skip_tests:
        steps.append(run("pytest gpu and trt", [sys.executable, "-m", "pytest", "-m", "gpu or trt", "-q"], work))
    report = work / "REPORT.md"
    verify_md = work / "verify" / "verify.md"
    report.write_text(
        "# reidcompress GPU / TensorRT check\n\n## Environment\n\n" + environment() + "\n\n## Steps\n\n"
        "| step | result | time | log |\n|---|---|---|---|\n" + "\n".join(s.row() for s in steps) + "\n\n"
        + (f"## verify\n\n{verify_md.read_text()}\n\n" if verify_md.exists() else "")
        + "## Output of each step (last lines)\n\n" + "\n".join(s.section() for s in steps)
    )  # fmt: skip
    print(f"report: {report}")
    return 0 if all(s.rc == 0 for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
