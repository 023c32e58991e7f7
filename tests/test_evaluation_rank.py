"""Market-1501 ranking: hand-made cases, a per-query loop oracle, chunking invariance."""

from __future__ import annotations

import numpy as np
import pytest

from reidcompress.errors import InputError
from reidcompress.evaluation import evaluate_rank, rank_metrics


def loop_oracle(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, kind=None) -> dict:
    """The protocol one query at a time, as torchreid's eval_market1501 and fast-reid's mINP."""
    max_rank = min(max_rank, distmat.shape[1])
    indices = np.argsort(distmat, axis=1, kind=kind)
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
    return {
        "cmc": np.sum(cmc, axis=0) / np.float32(len(cmc)),
        "mAP": np.mean(ap),
        "mINP": np.mean(inp),
        "num_valid_queries": len(cmc),
    }


def random_problem(seed: int, num_q: int = 40, num_g: int = 300, ids: int = 12, cams: int = 4, ties: bool = False):
    rng = np.random.default_rng(seed)
    distmat = rng.integers(0, 6, (num_q, num_g)).astype(np.float32) if ties else rng.random((num_q, num_g))
    labels = (
        rng.integers(1, ids, num_q),
        rng.integers(-1, ids, num_g),  # -1 junk and 0 distractors
        rng.integers(0, cams, num_q),
        rng.integers(0, cams, num_g),
    )
    return distmat, labels


def assert_same_metrics(ours: dict, ref: dict) -> None:
    np.testing.assert_array_equal(ours["cmc"], ref["cmc"])
    assert ours["cmc"].dtype == np.float32
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    assert ours["mAP"] == pytest.approx(ref["mAP"], rel=1e-12, abs=0)
    assert ours["mINP"] == pytest.approx(ref["mINP"], rel=1e-12, abs=0)


# --- hand-made cases -------------------------------------------------------------------------


def test_single_query_by_hand():
    # Gallery by distance: pid 1 (cam 1), pid 2, pid 1 (cam 2), pid 3, pid 1 (cam 3).
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([1, 1, 2, 2, 3])
    m = rank_metrics(dist, [1], g_pids, [0], g_cams, max_rank=5)
    np.testing.assert_array_equal(m["cmc"], [1, 1, 1, 1, 1])
    assert m["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert m["mINP"] == pytest.approx(3 / 5)


def test_same_pid_same_camera_items_are_dropped():
    # The closest item is the query's pid in the query's camera: dropped, so the first kept true
    # match is at rank 2 behind a pid-2 item; a same-camera item of ANOTHER pid stays.
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    g_pids, g_cams = np.array([1, 2, 1, 1]), np.array([0, 0, 1, 0])
    m = rank_metrics(dist, [1], g_pids, [0], g_cams, max_rank=3)
    np.testing.assert_array_equal(m["cmc"], [0, 1, 1])
    assert m["mAP"] == pytest.approx(1 / 2)  # the pid-1 cam-0 item at 0.4 is dropped as well
    assert m["mINP"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("other_pid", [0, -1], ids=["distractor", "junk"])
def test_distractors_and_junk_are_plain_non_matches(other_pid):
    dist = np.array([[0.1, 0.2, 0.3]])
    m = rank_metrics(dist, [4], np.array([other_pid, 4, other_pid]), [0], np.array([1, 1, 1]), max_rank=3)
    np.testing.assert_array_equal(m["cmc"], [0, 1, 1])
    assert m["mAP"] == pytest.approx(1 / 2)


def test_queries_without_a_kept_match_are_skipped():
    dist = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    q_pids, q_cams = np.array([1, 2, 3]), np.array([0, 0, 0])
    g_pids, g_cams = np.array([1, 2, 5]), np.array([1, 0, 1])
    # query 1 (pid 2) only has a same-camera match; query 2 (pid 3) has none at all.
    m = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    assert m["num_valid_queries"] == 1
    np.testing.assert_array_equal(m["cmc"], [1, 1, 1])
    assert m["mAP"] == 1.0


def test_no_valid_query_raises():
    with pytest.raises(InputError, match="no query"):
        rank_metrics(np.array([[0.1, 0.2]]), [1], [1, 2], [0], [0, 0], max_rank=2)


def test_gallery_smaller_than_max_rank_warns_and_truncates():
    distmat, labels = random_problem(0, num_q=10, num_g=7, ids=3, cams=3)
    with pytest.warns(UserWarning, match="only 7 items"):
        cmc, m_ap = evaluate_rank(distmat, *labels, max_rank=50)
    assert cmc.shape == (7,)
    ref = loop_oracle(distmat, *labels)
    np.testing.assert_array_equal(cmc, ref["cmc"])
    assert m_ap == pytest.approx(ref["mAP"], rel=1e-12)


def test_fewer_kept_items_than_max_rank_keeps_cmc_at_one():
    # 4 gallery items, one of them dropped: 3 kept items but max_rank 4 (torchreid fails here).
    dist = np.array([[0.4, 0.1, 0.2, 0.3]])
    m = rank_metrics(dist, [1], np.array([1, 1, 2, 3]), [0], np.array([0, 1, 1, 1]), max_rank=4)
    np.testing.assert_array_equal(m["cmc"], [1, 1, 1, 1])


def test_ties_follow_numpy_argsort_or_gallery_order():
    dist = np.zeros((1, 6))
    g_pids, g_cams = np.array([2, 3, 1, 4, 1, 5]), np.ones(6, int)
    stable = rank_metrics(dist, [1], g_pids, [0], g_cams, max_rank=6, ties="stable")
    np.testing.assert_array_equal(stable["cmc"], [0, 0, 1, 1, 1, 1])
    assert stable["mAP"] == pytest.approx((1 / 3 + 2 / 5) / 2)
    assert_same_metrics(
        rank_metrics(dist, [1], g_pids, [0], g_cams, max_rank=6),
        loop_oracle(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=6),
    )


# --- oracle equality and chunking ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_oracle_without_ties(seed):
    distmat, labels = random_problem(seed)
    assert_same_metrics(rank_metrics(distmat, *labels, max_rank=20), loop_oracle(distmat, *labels, max_rank=20))
    cmc, m_ap = evaluate_rank(distmat, *labels, max_rank=20)
    np.testing.assert_array_equal(cmc, loop_oracle(distmat, *labels, max_rank=20)["cmc"])


@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_oracle_with_ties(seed):
    distmat, labels = random_problem(seed, ties=True)
    assert_same_metrics(rank_metrics(distmat, *labels, ties="argsort"), loop_oracle(distmat, *labels))
    assert_same_metrics(rank_metrics(distmat, *labels, ties="stable"), loop_oracle(distmat, *labels, kind="stable"))


@pytest.mark.parametrize("ties", ["argsort", "stable"])
def test_chunk_size_does_not_change_any_number(ties):
    distmat, labels = random_problem(3, num_q=37, ties=True)
    full = rank_metrics(distmat, *labels, ties=ties)
    for chunk in (1, 4, 9, 36):
        chunked = rank_metrics(distmat, *labels, ties=ties, chunk_size=chunk)
        np.testing.assert_array_equal(chunked["cmc"], full["cmc"])
        assert (chunked["mAP"], chunked["mINP"]) == (full["mAP"], full["mINP"])
    tiny_budget = rank_metrics(distmat, *labels, ties=ties, memory_budget_mb=0.002)  # a few rows a chunk
    assert (tiny_budget["mAP"], tiny_budget["mINP"]) == (full["mAP"], full["mINP"])


def test_accepts_torch_and_float32_input():
    torch = pytest.importorskip("torch")
    distmat, labels = random_problem(1)
    ref = rank_metrics(distmat.astype(np.float32), *labels)
    ours = rank_metrics(torch.from_numpy(distmat.astype(np.float32)), *(torch.from_numpy(x) for x in labels))
    assert_same_metrics(ours, ref)


# --- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d, qp, gp, qc, gc: (d, qp[:-1], gp, qc, gc), "q_pids has 39"),
        (lambda d, qp, gp, qc, gc: (d, qp, gp, qc, gc[1:]), "g_camids has 299"),
        (lambda d, qp, gp, qc, gc: (d[0], qp, gp, qc, gc), "2-D"),
        (lambda d, qp, gp, qc, gc: (d, qp.astype(float), gp, qc, gc), "integers"),
        (lambda d, qp, gp, qc, gc: (np.where(d > 0.99, np.nan, d), qp, gp, qc, gc), "finite"),
    ],
    ids=["query-length", "gallery-length", "1d-distmat", "float-pids", "nan"],
)
def test_bad_inputs_raise_input_error(change, message):
    distmat, labels = random_problem(0)
    with pytest.raises(InputError, match=message):
        rank_metrics(*change(distmat, *labels))


@pytest.mark.parametrize("kwargs", [{"max_rank": 0}, {"ties": "random"}, {"chunk_size": 0}])
def test_bad_options_raise_input_error(kwargs):
    distmat, labels = random_problem(0)
    with pytest.raises(InputError):
        rank_metrics(distmat, *labels, **kwargs)
