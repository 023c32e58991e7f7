"""Time and peak memory of ``re_ranking`` at Market-1501 size (3368 queries, 15913 gallery).

Distances are squared euclidean (float32) between random features, as torchreid would pass them.
The process's peak resident memory is printed before and after re-ranking, so the inputs (about
1.3 GB, mostly the gallery-gallery matrix) can be told apart from the working memory.

    PYTHONPATH=. python tools/bench_rerank.py
    PYTHONPATH=. python tools/bench_rerank.py --impl reference \\
        --reference-file torchreid-0.2.5/torchreid/reid/utils/rerank.py --save /tmp/ref.npy
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import time

import numpy as np
from _reid_problem import SIZES, random_features

from reidcompress.evaluation import compute_distance
from reidcompress.evaluation.rerank import re_ranking


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _load_reference(path: str):
    spec = importlib.util.spec_from_file_location("reference_rerank", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.re_ranking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("ours", "reference"), default="ours")
    parser.add_argument("--reference-file", help="rerank.py of torchreid or fast-reid (for --impl reference)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--save", help="write the re-ranked distances to this .npy file")
    args = parser.parse_args()

    num_q, num_g, _, _ = SIZES["market1501"]
    qf, gf = random_features(num_q, num_g, args.dim)
    q_g, q_q, g_g = compute_distance(qf, gf), compute_distance(qf, qf), compute_distance(gf, gf)
    fn = re_ranking if args.impl == "ours" else _load_reference(args.reference_file)
    print(f"{args.impl}: {num_q} queries x {num_g} gallery; peak RSS with inputs {_peak_rss_mb():.0f} MB")

    t0 = time.perf_counter()
    out = fn(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3)
    elapsed = time.perf_counter() - t0
    print(f"re_ranking: {elapsed:.1f} s, peak RSS {_peak_rss_mb():.0f} MB, output {out.dtype} {out.shape}")
    if args.save:
        np.save(args.save, out)


if __name__ == "__main__":
    main()
