"""keep_freed_memory: repeated large allocations stop faulting in fresh pages, as a training step's do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reidcompress.train._malloc import available

# What a training step does to memory: several activation-sized blocks (8 MiB) allocated, then all freed.
# Prints the minor page faults of the 20 rounds after the first.
ROUNDS = """
import resource, sys, torch
from reidcompress.train._malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for step in range(21):
    if step == 1:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2 * 2**20) for _ in range(4)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not available(), reason="needs glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    # Kept, the blocks are faulted in once and reused: at most one block's pages (2,048) in 20 rounds.
    kept = _faults("keep")
    assert kept <= 2048 + 256
    # By default glibc usually gives freed blocks back to the kernel (the heap top once it exceeds twice
    # the largest freed block) and faults them in again every round; where the top happens to be pinned
    # by another allocation, or huge pages or an LD_PRELOAD allocator are in use, it reuses them too.
    default = _faults("default")
    if default >= 20 * 2048:
        assert kept < default / 10
