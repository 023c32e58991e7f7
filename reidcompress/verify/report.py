"""Verification reports: JSON for machines, Markdown for people."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reidcompress._io import atomic_write_text

__all__ = ["write_report", "markdown", "model_rows"]


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def model_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per model (reference first) for tables and plots."""
    rows = []
    for m in [result["reference"], *result["candidates"]]:
        lat = m["latency"]
        b1 = lat.get("1", {})
        bn_key = max(lat, key=int) if lat else None
        bn = lat.get(bn_key, {}) if bn_key else {}
        rows.append(
            {
                "model": Path(m["path"]).name,
                "role": m["role"],
                "backend": m["runtime"].get("backend"),
                "precision": m["runtime"].get("precision", "fp32"),
                "flops": m["flops"],
                "params": m["params"],
                "rank1": m["metrics"]["rank1"],
                "mAP": m["metrics"]["mAP"],
                "rank1_drop": m["drops"].get("rank1"),
                "map_drop": m["drops"].get("mAP"),
                "min_cosine": (m["parity"] or {}).get("min_cosine"),
                "max_abs_diff": (m["parity"] or {}).get("max_abs_diff"),
                "p50_b1_ms": b1.get("p50_ms"),
                "batch": int(bn_key) if bn_key else None,
                "p50_bn_ms": bn.get("p50_ms"),
                "images_per_s": bn.get("images_per_s"),
                "passed": m["passed"],
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    env, tol = result["environment"], result["tolerances"]
    lines = [
        f"# reidcompress verify: {'PASSED' if result['passed'] else 'FAILED'}",
        "",
        f"Dataset `{result['dataset']}`; tolerances: rank-1 drop <= {tol['max_rank1_drop']} points"
        + (f", mAP drop <= {tol['max_map_drop']}" if tol["max_map_drop"] is not None else "")
        + (f", min cosine >= {tol['min_cosine']}" if tol["min_cosine"] is not None else "")
        + ".",
        "",
        f"Measured on {env.get('gpu') or env['cpu']} ({env['device']}, {env['threads']} threads); "
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']}"
        + (f", TensorRT {env['tensorrt']}" if env.get("tensorrt") else "")
        + ".",
        "",
        "| model | backend | GFLOPs | rank-1 | Δ rank-1 | mAP | Δ mAP | min cosine "
        "| p50 ms b1 | p50 ms bN | img/s | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in model_rows(result):
        verdict = "reference" if r["role"] == "reference" else ("pass" if r["passed"] else "**FAIL**")
        gflops = r["flops"] / 1e9 if r["flops"] else None
        lines.append(
            f"| {r['model']} | {r['backend']} {r['precision']} | {_fmt(gflops, '.3f')} | {_fmt(r['rank1'])} | "
            f"{_fmt(r['rank1_drop'])} | {_fmt(r['mAP'])} | {_fmt(r['map_drop'])} | {_fmt(r['min_cosine'], '.6f')} | "
            f"{_fmt(r['p50_b1_ms'])} | {_fmt(r['p50_bn_ms'])} (b{r['batch']}) | {_fmt(r['images_per_s'], '.1f')} | "
            f"{verdict} |"
        )
    failed = [(Path(c["path"]).name, ch) for c in result["candidates"] for ch in c["checks"] if not ch["passed"]]
    if failed:
        lines += ["", "## Broken tolerances", ""]
        lines += [f"- {name}: {ch['name']} = {ch['value']:.4f}, limit {ch['limit']}" for name, ch in failed]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    js = atomic_write_text(folder / "verify.json", json.dumps(result, indent=2))
    md = atomic_write_text(folder / "verify.md", markdown(result))
    return js, md
