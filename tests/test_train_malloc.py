"""keep_freed_memory: repeated large allocations stop faulting in fresh pages, as a training step's do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reidcompress.train._malloc import keep_freed_memory

# What a training step does to memory: several activation-sized blocks (8 MiB) allocated, then all freed.
# Prints the minor page faults of the rounds after the first.
ROUNDS = """
import resource, sys, torch
from reidcompress.train._malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for step in range(6):
    if step == 1:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2 * 2**20) for _ in range(4)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not keep_freed_memory(), reason="needs glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    # By default glibc gives the freed heap top back to the kernel once it exceeds twice the largest
    # freed block, so each round faults its 32 MiB in again (2,048 pages a block); kept, it is reused.
    default, kept = _faults("default"), _faults("keep")
    assert default >= 5 * 4 * 2048 * 0.9
    assert kept < default / 10
