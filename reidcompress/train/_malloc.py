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

__all__ = ["keep_freed_memory"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above half its heap size, 32 MiB on 64-bit.
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**30

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where there is no glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
