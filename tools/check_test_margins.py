"""The margins of the tests whose thresholds depend on a short training run, over several seeds.

Issue 15: no test may assert a threshold that depends on how a training run turns out unless the margin is
shown to hold over 5 seeds. The tests below use ``trained_tiny`` (``tests/conftest.py``: ``tiny`` trained
~2 s on 15 synthetic ids); this tool reruns exactly that recipe (``train_tiny``, loaded from the conftest
so the two cannot drift apart) with each seed, repeats what each test measures, and prints a table of
metric and threshold. The fixture itself uses seed 0. It also reruns, with the same seeds, the two tests on
``tiny_model`` (random weights) that compare trained or pruned weights with a threshold.

    PYTHONPATH=$PWD python tools/check_test_margins.py --seeds 0-4 --work runs/margins [--json margins.json]

The INT8 margins depend on the CPU's integer kernels: to see them on a CPU without VNNI, train natively with
``--work``, then rerun only the INT8 part under emulation on the same checkpoints (training there is slow):

    qemu-x86_64 -cpu Haswell $(command -v python) tools/check_test_margins.py --parts int8 --work runs/margins
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from reidcompress.cli import app
from reidcompress.data.datasets import load_dataset
from reidcompress.evaluation.features import evaluate_model
from reidcompress.export.calibration import calibration_batches, reference_images
from reidcompress.export.onnx import ExportError
from reidcompress.export.parity import check_parity
from reidcompress.export.quantize import quantize_onnx
from reidcompress.prune import PruneData, PruneOptions, prune_model
from reidcompress.prune.criteria import L1Norm
from reidcompress.prune.engine import score_groups, select_channels
from reidcompress.prune.planning import kept_for_rate
from reidcompress.prune.sensitivity import analyse_sensitivity
from reidcompress.prune.strategies.play_and_prune import Shrink
from reidcompress.runtime.onnx_backend import OnnxEmbedder
from reidcompress.verify.api import verify

ROOT = Path(__file__).resolve().parents[1]
MIN_COSINE = 0.98  # tests/test_export_int8.py
_COSINE_IN_MESSAGE = re.compile(r"min cosine (-?[0-9.]+)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reidcompress_tests_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cosine_or_gate_message(fn: Callable[[], float]) -> float:
    """The min cosine a quantisation reached, also when its 0.98 gate refused it (the number is in the error)."""
    try:
        return fn()
    except ExportError as e:
        found = _COSINE_IN_MESSAGE.search(str(e))
        if found is None:
            raise
        return float(found.group(1))


def int8_rows(ckpt: Path, root: Path, work: Path) -> list[dict[str, Any]]:
    """What tests/test_export_int8.py asserts: the export gate, the 32-image parity, verify's parity, and the
    entropy and percentile calibrations, each >= 0.98."""
    fp32, int8 = work / "m.onnx", work / "m.int8.onnx"
    args = ["export", str(ckpt), "-o", str(fp32), "--int8", "--calib-data", str(root)]
    res = CliRunner().invoke(app, [*args, "--calib-images", "64", "--opset", "17", "--json"])
    if res.exit_code == 0:
        gate = json.loads(res.stdout)["int8"]["parity_to_fp32"]["min_cosine"]
    else:
        found = _COSINE_IN_MESSAGE.search(res.output)
        if found is None:
            raise RuntimeError(f"export --int8 failed: {res.output}")
        gate = float(found.group(1))
    rows = [{"test": "test_export_int8 fixture: export --int8 gate", "metric": "min cosine", "value": gate}]
    if res.exit_code != 0:  # the INT8 model was not written: every other INT8 test errors in the fixture
        return [{**r, "threshold": f">= {MIN_COSINE}"} for r in rows]
    with OnnxEmbedder(fp32) as a, OnnxEmbedder(int8) as b:
        images = reference_images((64, 32), root, n=32)
        rows.append(
            {
                "test": "test_int8_embeddings_match_fp32_on_real_images",
                "metric": "min cosine",
                "value": check_parity(a, b, images, min_cosine=MIN_COSINE).min_cosine,
            }
        )
    result = verify(fp32, [int8], root, latency_batches=(2,), latency_runs=2, use_cache=False, progress=False)
    parity = result.candidates[0].parity
    assert parity is not None
    rows.append(
        {"test": "test_verify_reports_the_int8_drop_and_cosine", "metric": "min cosine", "value": parity["min_cosine"]}
    )
    batches = calibration_batches(root, (64, 32), num_images=32, batch_size=8)
    for method in ("entropy", "percentile"):

        def quantise(method: str = method) -> float:
            out = quantize_onnx(
                fp32, work / f"{method}.onnx", batches, method=method, parity_images=np.concatenate(batches)
            )
            assert out.parity is not None
            return out.parity.min_cosine

        rows.append(
            {
                "test": f"test_histogram_calibration[{method}]",
                "metric": "min cosine (gate)",
                "value": _cosine_or_gate_message(quantise),
            }
        )
    return [{**r, "threshold": f">= {MIN_COSINE}"} for r in rows]


def tiny_model_rows(conftest: ModuleType, synth: Path, seed: int) -> list[dict[str, Any]]:
    """The two tests on ``tiny_model`` (random weights, seed 0 in the tests) whose outcome rests on what the
    weights and one epoch of training do: the shrink epoch, and reconstruction against L1 at equal FLOPs."""
    data = PruneData(items=tuple(load_dataset(synth).train), p=4, k=2)
    torch.manual_seed(seed)
    model = conftest.make_tiny_model()
    plan = select_channels(groups := score_groups(model, L1Norm(), residual=False), kept_for_rate(groups, 0.5))
    data.fit(model, 1, [Shrink(plan, 1e-3)])
    bn = model.backbone.layer1[0].bn1
    weak = plan["backbone.layer1.0.conv1"]
    strong = sorted(set(range(bn.num_features)) - set(weak))
    shrink = "test_shrink_silences_the_planned_channels_during_an_epoch"
    rows: list[dict[str, Any]] = [
        {
            "test": shrink,
            "metric": "max |BN weight|, shrunk channels",
            "value": bn.weight[weak].abs().max().item(),
            "threshold": "< 0.05",
        },
        {
            "test": shrink,
            "metric": "min |BN weight|, kept channels",
            "value": bn.weight[strong].abs().min().item(),
            "threshold": "> 0.05",
        },
    ]
    torch.manual_seed(seed)
    model = conftest.make_tiny_model()
    x = torch.stack([next(data.calibration_batches((64, 32), 1))[0][i] for i in range(4)])
    with torch.no_grad():
        ref = model(x)

    def similarity(method: str) -> float:
        pruned = copy.deepcopy(model)
        prune_model(pruned, method, PruneOptions(target_flops=0.5, round_to=1, calib_batches=2), data)
        with torch.no_grad():
            return float(F.cosine_similarity(pruned.eval()(x), ref).mean())

    l1 = similarity("hao_li")
    for method in ("thinet", "channel_pruning"):
        rows.append(
            {
                "test": "test_reconstruction_keeps_the_embedding_closer_than_l1_at_equal_flops",
                "metric": f"mean cosine {method} - hao_li",
                "value": similarity(method) - l1,
                "threshold": "> 0",
            }
        )
    return rows


def trained(conftest: ModuleType, out: Path, seed: int) -> tuple[Path, Path]:
    """``train_tiny(out, seed)``, or what an earlier run left in ``out`` (an emulated CPU can reuse it)."""
    ckpt, root = out / "tiny-trained.pt", out / "market"
    if ckpt.exists() and root.is_dir():
        return ckpt, root
    shutil.rmtree(out, ignore_errors=True)  # what an interrupted run left
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    ckpt, root = conftest.train_tiny(out, seed)
    log(f"seed {seed}: trained in {time.perf_counter() - t0:.1f} s")
    return ckpt, root


def seed_rows(conftest: ModuleType, seed: int, parts: set[str], work: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "tiny" in parts:
        synth = work / "synth"
        rows += tiny_model_rows(
            conftest, synth if (synth / "synth.json").exists() else conftest.synth_market(synth), seed
        )
    if parts & {"trained", "int8"}:
        ckpt, root = trained(conftest, work / f"seed{seed}", seed)
        if "trained" in parts:
            metrics = evaluate_model(ckpt, root, use_cache=False, progress=False)
            sens = analyse_sensitivity(ckpt, root, rates=(0.25, 0.5), max_queries=12, store=work / f"sens{seed}")
            note = "(no test asserts it since issue 15)"
            rows += [
                {"test": f"trained_tiny on its data {note}", "metric": "rank-1", "value": metrics["rank1"]},
                {"test": f"trained_tiny on its data {note}", "metric": "mAP", "value": metrics["mAP"]},
                {
                    "test": f"sensitivity baseline, 12 queries {note}",
                    "metric": "rank-1",
                    "value": sens["baseline"]["rank1"],
                },
            ]
        if "int8" in parts:
            with tempfile.TemporaryDirectory() as tmp:
                rows += int8_rows(ckpt, root, Path(tmp))
    return [{"seed": seed, **r} for r in rows]


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| test | metric | threshold | " + " | ".join(f"seed {s}" for s in sorted({r["seed"] for r in rows})) + " |")
    print("|---|---|---|" + "---|" * len({r["seed"] for r in rows}))
    keys = list(dict.fromkeys((r["test"], r["metric"], r.get("threshold", "")) for r in rows))
    for key in keys:
        values = {r["seed"]: r["value"] for r in rows if (r["test"], r["metric"], r.get("threshold", "")) == key}
        cells = [f"{values[s]:.4f}" if s in values else "-" for s in sorted({r["seed"] for r in rows})]
        print(f"| {key[0]} | {key[1]} | {key[2] or '-'} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3")
    parser.add_argument(
        "--parts",
        default="trained,int8,tiny",
        help="trained: trained_tiny's scores; int8: its INT8 tests; tiny: tiny_model's",
    )
    parser.add_argument("--work", type=Path, help="keep (and reuse) the trained checkpoints here")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    conftest = load_conftest()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows: list[dict[str, Any]] = []
        for seed in _seeds(args.seeds):
            rows += seed_rows(conftest, seed, parts, work)
            log(json.dumps([r for r in rows if r["seed"] == seed]))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
