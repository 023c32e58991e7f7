"""P x K identity batches for metric learning (Hermans et al., "In Defense of the Triplet Loss", 2017)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from reidcompress.errors import DatasetError

__all__ = ["PKSampler"]


class PKSampler(Sampler[list[int]]):
    """Batch sampler: each batch holds ``p`` distinct identities with ``k`` images each.

    An epoch walks a random permutation of the identities, so every identity appears about once per
    epoch (the last batch is completed from the start of the permutation). Identities with fewer than
    ``k`` images are sampled with replacement. The plan depends only on ``(seed, epoch)``: every rank
    builds the same one and takes every ``world_size``-th batch, so ranks see disjoint batches and the
    same number of them (the plan is padded to a multiple of ``world_size`` batches).

    Args:
        pids: The person id of each dataset item (index i of the dataset has pid ``pids[i]``).
        p: Identities per batch (>= 2).
        k: Images per identity (>= 2, or batch-hard triplets have no positive).
        seed: Base seed; call :meth:`set_epoch` before each epoch for a new order.
        rank: This process's rank in ``0..world_size-1``.
        world_size: Number of data-parallel processes.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(pids) == 0:
            raise DatasetError("PK sampler: the item list is empty")
        if p < 2 or k < 2:
            raise DatasetError(f"PK sampler needs P >= 2 identities and K >= 2 images per identity, got P={p}, K={k}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DatasetError(f"PK sampler: rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        pid_array = np.asarray(pids)
        ids, inverse = np.unique(pid_array, return_inverse=True)
        if len(ids) < p:
            raise DatasetError(f"PK sampler: only {len(ids)} identities, fewer than P={p} per batch")
        self._members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
        self.p, self.k, self.seed, self.rank, self.world_size = p, k, seed, rank, world_size
        self.epoch = 0
        per_epoch = -(-len(ids) // p)
        self._num_batches = -(-per_epoch // world_size)  # per rank

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose plan the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        num_ids = len(self._members)
        order = rng.permutation(num_ids)
        total = self._num_batches * self.world_size
        # Any p consecutive entries of a repeated permutation are distinct because p <= num_ids.
        seq = np.resize(order, total * self.p).reshape(total, self.p)
        # Draw for every batch, not only this rank's, so all ranks consume the generator identically.
        plan = [[self._draw(rng, i) for i in row] for row in seq]
        for batch in plan[self.rank :: self.world_size]:
            yield np.concatenate(batch).tolist()

    def _draw(self, rng: np.random.Generator, identity: int) -> np.ndarray:
        members = self._members[identity]
        return rng.choice(members, self.k, replace=len(members) < self.k)
