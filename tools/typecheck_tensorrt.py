"""Type-check the TensorRT code paths against tensorrt-stubs, on a machine without TensorRT.

tensorrt-stubs (10.8-10.13) ships ``tensorrt/__init__.pyi`` without a ``py.typed`` marker, so mypy
ignores it as an untyped package, and its generated ``tensorrt_bindings/tensorrt.pyi`` has
signatures Python cannot parse: plugin parameters named ``in`` (a keyword) and parameters without a
default after ones with a default (``add_scale_nd``). This copies the stubs into a temporary stub
directory with those signatures repaired (``in`` -> ``in_``; ``= ...`` defaults added), then runs
mypy with it on MYPYPATH.

    pip install --no-deps tensorrt-stubs==10.13.0.35.1   # its `tensorrt` dependency needs NVIDIA's index
    python tools/typecheck_tensorrt.py
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = [
    "reidcompress/export/tensorrt.py",
    "reidcompress/formats/engine_sidecar.py",
    "reidcompress/runtime/trt_backend.py",
]
ROOT = Path(__file__).resolve().parents[1]


def stub_files() -> list[Path]:
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs")
    return [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(".pyi")]


def _split_params(params: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(params):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(params[start:i])
            start = i + 1
    return [*parts, params[start:]]


def repair_signature(line: str) -> str:
    """Make one generated ``def`` line parseable; lines that parse are returned unchanged."""
    try:
        ast.parse(line.strip() + " ...")
        return line
    except SyntaxError:
        pass
    head, _, rest = line.partition("(")
    params, sep, tail = rest.rpartition(") ->")
    fixed, seen_default = [], False
    for param in _split_params(re.sub(r"\bin: ", "in_: ", params)):
        if "=" in param:
            seen_default = True
        elif seen_default and param.strip() and not param.strip().startswith("*"):
            param += " = ..."
        fixed.append(param)
    return f"{head}({','.join(fixed)}{sep}{tail}"


def repair(text: str) -> str:
    return "\n".join(repair_signature(ln) if ln.lstrip().startswith("def ") else ln for ln in text.split("\n"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for src in stub_files():
            package = src.parent.name
            dst = Path(tmp) / package / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(repair(src.read_text()))
        env = {**os.environ, "MYPYPATH": tmp}
        cmd = [sys.executable, "-m", "mypy", "--follow-imports=silent", *(sys.argv[1:] or FILES)]
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
