"""Benchmark ``rank_metrics`` against a per-query numpy loop at Market-1501 size.

``rank_metrics`` runs with its default, torchreid's tie order, and with ``ties="stable"``. The loop
is the protocol written the obvious way (torchreid's ``eval_market1501`` with its inner
list comprehension vectorised): one full ``np.argsort`` of the matrix, then per query a
same-camera filter, a cumsum and the AP sum. Both run on one random distance matrix; the tool
checks they agree, then prints median and spread of each and their ratio.

    PYTHONPATH=. python tools/bench_rank.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from _reid_problem import SIZES, random_features, synthetic_labels

from reidcompress.evaluation import compute_distance, rank_metrics


def loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50) -> dict:
    """The Market-1501 protocol, one query at a time."""
    max_rank = min(max_rank, distmat.shape[1])
    indices = np.argsort(distmat, axis=1)
    cmc, ap, inp = [], [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        match = g_pids[order] == q_pids[i]
        raw = match[~(match & (g_camids[order] == q_camids[i]))]
        if not raw.any():
            continue
        hits = np.cumsum(raw)
        pos = np.flatnonzero(raw)
        curve = np.ones(max_rank, np.float32)
        curve[: len(hits)] = np.minimum(hits[:max_rank], 1)
        cmc.append(curve)
        ap.append(np.sum(hits[pos] / (pos + 1.0)) / len(pos))
        inp.append(len(pos) / (pos[-1] + 1.0))
    return {"cmc": np.sum(cmc, axis=0) / np.float32(len(cmc)), "mAP": np.mean(ap), "mINP": np.mean(inp)}


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256, help="feature dimension of the random features")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    num_q, num_g, num_ids, num_cams = SIZES["market1501"]
    labels = synthetic_labels(num_q, num_g, num_ids, num_cams)
    qf, gf = random_features(num_q, num_g, args.dim)
    distmat = compute_distance(qf, gf)
    print(f"market1501: {num_q} queries x {num_g} gallery, float32 distances")

    ours, ref = rank_metrics(distmat, *labels), loop_reference(distmat, *labels)
    assert np.array_equal(ours["cmc"], ref["cmc"]), "CMC differs from the loop"
    assert np.isclose(ours["mAP"], ref["mAP"], rtol=1e-12, atol=0) and np.isclose(ours["mINP"], ref["mINP"], rtol=1e-12)
    print(f"agree: mAP={ours['mAP']:.6f} mINP={ours['mINP']:.6f} rank1={ours['cmc'][0]:.4f}")

    timings = {
        "rank_metrics": _time(lambda: rank_metrics(distmat, *labels), args.repeats),
        "ties=stable": _time(lambda: rank_metrics(distmat, *labels, ties="stable"), args.repeats),
        "per-query loop": _time(lambda: loop_reference(distmat, *labels), args.repeats),
    }
    for name, ts in timings.items():
        print(f"{name:15s} median {statistics.median(ts):.3f} s  (min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})")
    loop = statistics.median(timings["per-query loop"])
    print(
        f"speed-up over the loop: {loop / statistics.median(timings['rank_metrics']):.1f}x (torchreid tie order), "
        f"{loop / statistics.median(timings['ties=stable']):.1f}x (ties=stable)"
    )


if __name__ == "__main__":
    main()
