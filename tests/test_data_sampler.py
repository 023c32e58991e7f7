"""PK sampler: batch composition, epoch coverage, determinism, distributed shares, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

from reidcompress.data.sampler import PKSampler
from reidcompress.errors import DatasetError

# 10 identities with 1..7 images each (identity 3 has a single image: sampled with replacement)
PIDS = [pid for pid, n in zip(range(10), [4, 5, 6, 1, 7, 2, 3, 4, 5, 6], strict=True) for _ in range(n)]


def _batches(sampler: PKSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_batch_is_p_distinct_ids_times_k() -> None:
    s = PKSampler(PIDS, p=4, k=3, seed=1)
    batches = _batches(s)
    assert len(batches) == len(s) >= 2
    for b in batches:
        assert len(b) == 12
        counts = Counter(PIDS[i] for i in b)
        assert len(counts) == 4 and set(counts.values()) == {3}
        for pid in counts:  # no duplicate image of an identity that has >= K images
            idx = [i for i in b if PIDS[i] == pid]
            if PIDS.count(pid) >= 3:
                assert len(set(idx)) == 3


def test_epoch_uses_images_about_once_like_torchreid() -> None:
    """torchreid's RandomIdentitySampler epoch: identity i gives max(1, n_i // K) chunks of K."""
    s = PKSampler(PIDS, p=2, k=2)
    batches = _batches(s)
    chunks = Counter(PIDS[b[j]] for b in batches for j in range(0, len(b), 2))
    expected = {pid: max(1, PIDS.count(pid) // 2) for pid in range(10)}
    assert all(chunks[pid] <= expected[pid] for pid in range(10))
    # Only chunks of fewer than P identities can be left over at the end of an epoch.
    assert sum(expected.values()) - sum(chunks.values()) < 2 * max(expected.values())
    seen = [i for b in batches for i in b if PIDS.count(PIDS[i]) >= 2]
    assert len(seen) == len(set(seen))  # no image twice in an epoch


def test_deterministic_for_seed_and_epoch() -> None:
    a, b = PKSampler(PIDS, p=4, k=2, seed=3), PKSampler(PIDS, p=4, k=2, seed=3)
    assert _batches(a, 5) == _batches(b, 5)
    assert _batches(a, 5) != _batches(a, 6)  # set_epoch changes the order
    assert _batches(a, 5) != _batches(PKSampler(PIDS, p=4, k=2, seed=4), 5)


def test_ranks_get_disjoint_equal_shares() -> None:
    pids = [pid for pid in range(16) for _ in range(3)]
    full = _batches(PKSampler(pids, p=2, k=2, seed=7), 2)
    shares = [_batches(PKSampler(pids, p=2, k=2, seed=7, rank=r, world_size=3), 2) for r in range(3)]
    assert len(full) == 8  # 16 ids x one chunk each / P=2
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == 3  # 8 batches padded to 9
    assert shares[0][:2] == full[0:6:3]  # rank r takes every world_size-th batch of the same plan
    flat = [tuple(b) for s in shares for b in s]
    assert len(set(flat[:8])) == 8 and set(flat) == {tuple(b) for b in full}
    two = [_batches(PKSampler(pids, p=2, k=2, seed=7, rank=r, world_size=2), 2) for r in range(2)]
    ids0, ids1 = ({pids[i] for b in s for i in b} for s in two)
    assert not ids0 & ids1 and len(ids0 | ids1) == 16  # 16 ids / (P=2 x 2 ranks): no padding, disjoint ids


@pytest.mark.parametrize(
    ("pids", "p", "k", "msg"),
    [
        ([], 2, 2, "item list is empty"),
        (PIDS, 4, 1, "K >= 2"),
        (PIDS, 1, 4, "P >= 2"),
        (PIDS, 11, 2, "only 10 identities, fewer than P=11"),
    ],
)
def test_bad_input(pids: list[int], p: int, k: int, msg: str) -> None:
    with pytest.raises(DatasetError, match=msg):
        PKSampler(pids, p, k)


def test_bad_rank() -> None:
    with pytest.raises(DatasetError, match="rank must be in 0..world_size-1"):
        PKSampler(PIDS, 2, 2, rank=2, world_size=2)
