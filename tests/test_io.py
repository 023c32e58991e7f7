"""Atomic writes: all or nothing, and files as readable as a plain open() would make them."""

from __future__ import annotations

import os
import stat

import pytest

from reidcompress._io import atomic_path, atomic_write_text


def test_atomic_write_uses_the_umask_not_mkstemps_0600(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        out = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and out.read_text() == "x"


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path) -> None:
    out = atomic_write_text(tmp_path / "m.pt", "old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("export failed")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
