"""Atomic file output and content hashing shared by every writer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reidcompress.errors import InputError

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "check_output_path",
    "file_sha256",
    "json_digest",
    "require_file",
    "save_figure",
    "umask_mode",
]


def require_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path, raising InputError when it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if not p.is_file():
        raise InputError(f"{what} is not a file: {p}")
    return p


def check_output_path(out: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> Path:
    """Refuse to write an output over one of the command's inputs."""
    o = Path(out)
    for i in inputs:
        if Path(i).exists() and o.exists() and o.resolve() == Path(i).resolve():
            raise InputError(f"refusing to overwrite the input {i}; choose another output path")
    if o.exists() and o.is_dir():
        raise InputError(f"output path is a directory: {o}")
    return o


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    Readers never see a half-written file and a failed write leaves nothing behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the result the mode a plain open() would (0666 less the umask),
        # so models written for a container or a team stay readable by them.
        os.chmod(tmp_path, umask_mode(0o666))
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def umask_mode(mode: int) -> int:
    """``mode`` less the process umask: what a plain open() or mkdir() would have given."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write_text(final: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)


def save_figure(fig: Any, out: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (PNG by default)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=dpi)
    return out


def json_digest(obj: Any, length: int = 16) -> str:
    """A short sha256 of ``obj`` as canonical JSON (sorted keys): a key for caches and resumable results."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
