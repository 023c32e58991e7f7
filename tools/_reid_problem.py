"""Synthetic ReID evaluation problems at real dataset sizes, shared by the benchmark tools."""

from __future__ import annotations

import numpy as np

# (query, gallery, test identities, cameras) of the standard test splits, junk images removed.
SIZES = {
    "market1501": (3368, 15913, 750, 6),
    "msmt17": (11659, 82161, 3060, 15),
}


def synthetic_labels(
    num_q: int, num_g: int, num_ids: int, num_cams: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels shaped like a real split: every query id in the gallery, some pid-0 distractors.

    Returns:
        q_pids, g_pids, q_camids, g_camids (int64).
    """
    rng = np.random.default_rng(seed)
    ids = np.arange(1, num_ids + 1)
    q_pids = np.concatenate([ids, rng.choice(ids, num_q - num_ids)])
    num_distractors = num_g // 7
    g_pids = np.concatenate([ids, rng.choice(ids, num_g - num_ids - num_distractors), np.zeros(num_distractors, int)])
    return (
        rng.permutation(q_pids).astype(np.int64),
        rng.permutation(g_pids).astype(np.int64),
        rng.integers(0, num_cams, num_q),
        rng.integers(0, num_cams, num_g),
    )


def random_features(num_q: int, num_g: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 query and gallery features, made without float64 temporaries."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_q, dim), dtype=np.float32), rng.standard_normal((num_g, dim), dtype=np.float32)
