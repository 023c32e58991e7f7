"""P x K identity batches for metric learning (Hermans et al., "In Defense of the Triplet Loss", 2017)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from reidcompress.errors import DatasetError

__all__ = ["PKSampler"]


class PKSampler(Sampler[list[int]]):
    """Batch sampler: each batch holds ``p`` distinct identities with ``k`` images each.

    An epoch follows torchreid's ``RandomIdentitySampler`` (so epoch counts in published ReID
    recipes mean the same here): each identity's images are shuffled and cut into chunks of ``k``
    (an identity with fewer than ``k`` images gives one chunk drawn with replacement), and batches
    take one chunk from each of ``p`` random identities that still have chunks, until fewer than
    ``p`` remain. About every image is seen once per epoch. The plan depends only on
    ``(seed, epoch)``: every rank builds the same one and takes every ``world_size``-th batch, so
    ranks see disjoint batches and the same number of them (the plan is padded to a multiple of
    ``world_size`` batches by repeating its first ones).

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
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose plan the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._plan()) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._plan()[self.rank :: self.world_size]:
            yield batch.tolist()

    def _plan(self) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build_plan(np.random.default_rng([self.seed, self.epoch])))
        return self._cache[1]

    def _chunks(self, rng: np.random.Generator, members: np.ndarray) -> list[np.ndarray]:
        if len(members) < self.k:
            return [rng.choice(members, self.k, replace=True)]
        shuffled = rng.permutation(members)
        return [shuffled[j * self.k : (j + 1) * self.k] for j in range(len(members) // self.k)]

    def _build_plan(self, rng: np.random.Generator) -> list[np.ndarray]:
        chunks = [self._chunks(rng, m) for m in self._members]
        available = np.arange(len(chunks))
        plan = []
        while len(available) >= self.p:
            picked = rng.choice(available, self.p, replace=False)
            plan.append(np.concatenate([chunks[i].pop() for i in picked]))
            available = np.array([i for i in available if chunks[i]], dtype=np.int64)
        padding = -len(plan) % self.world_size
        return plan + plan[:padding]
