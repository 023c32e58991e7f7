"""Keep freed activation memory in the process while training on a CPU.

PyTorch's CPU allocator is plain ``malloc``. glibc serves blocks above its mmap threshold (128 KiB,
raised on the fly only up to the size of the last freed block) with fresh ``mmap`` pages and hands
them back on ``free``, so every training step faults in and zeroes its activations again: about
11,000 page faults and 5% of a step for the demo's network (batch 64 at 128x64). Raising the mmap
and trim thresholds lets freed blocks be reused from the heap. It changes no computed value.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

__all__ = ["available", "keep_freed_memory"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above half its heap size, 32 MiB on 64-bit.
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**30

_done = False


def _mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).mallopt  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return None


def available() -> bool:
    """Whether this process's C library has glibc's ``mallopt`` (checked without calling it)."""
    return _mallopt() is not None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for the rest of this process (once); False without glibc.

    Process-wide and for good: after training the process keeps up to its peak heap (freed memory is
    not returned until 1 GiB is free at the top), and glibc's own threshold adjustment stays off. Under
    an ``LD_PRELOAD`` allocator (jemalloc, tcmalloc), which already reuses freed memory, the call
    reaches glibc's unused malloc and changes nothing.
    """
    global _done
    mallopt = _mallopt()
    if _done or mallopt is None:
        return _done
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
