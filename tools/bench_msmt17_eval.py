"""Time and peak memory of ``evaluate_features`` at MSMT17 size (11,659 x 82,161, 2048-d features).

The features are random (standard normal, float32) with MSMT17-shaped labels. Prints the wall time
of the evaluation (feature generation excluded), the process's peak resident memory (features
included) and the metrics. Goal on 2 CPU cores: under 45 s and under 2 GB.

    PYTHONPATH=. python tools/bench_msmt17_eval.py
    PYTHONPATH=. python tools/bench_msmt17_eval.py --metric cosine --chunk-size 512
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from _reid_problem import SIZES, random_features, synthetic_labels

from reidcompress.evaluation import evaluate_features, list_metrics


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", choices=list_metrics(), default="euclidean")
    parser.add_argument("--ties", choices=("stable", "argsort"), default="stable")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--chunk-size", type=int, default=None, help="query rows per chunk (default: from budget)")
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries (quick runs)")
    args = parser.parse_args()

    num_q, num_g, num_ids, num_cams = SIZES["msmt17"]
    labels = synthetic_labels(num_q, num_g, num_ids, num_cams)
    qf, gf = random_features(num_q, num_g, args.dim)
    q_pids, g_pids, q_camids, g_camids = labels
    if args.queries:
        qf, q_pids, q_camids = qf[: args.queries], q_pids[: args.queries], q_camids[: args.queries]
    print(
        f"{len(qf)} queries x {num_g} gallery, dim {args.dim}, metric {args.metric}, ties {args.ties}, "
        f"{torch.get_num_threads()} torch threads; peak RSS before evaluation {_peak_rss_mb():.0f} MB"
    )

    t0 = time.perf_counter()
    metrics = evaluate_features(
        qf, gf, q_pids, g_pids, q_camids, g_camids, metric=args.metric, chunk_size=args.chunk_size, ties=args.ties
    )
    elapsed = time.perf_counter() - t0
    print(f"evaluate_features: {elapsed:.1f} s, peak RSS {_peak_rss_mb():.0f} MB")
    print(
        f"mAP={metrics['mAP']:.6f} mINP={metrics['mINP']:.6f} rank1={metrics['cmc'][0]:.6f} "
        f"valid queries={metrics['num_valid_queries']}"
    )


if __name__ == "__main__":
    main()
