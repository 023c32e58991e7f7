"""Distances and the bounded-memory ``evaluate_features``: same numbers however it is chunked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidcompress.errors import InputError
from reidcompress.evaluation import compute_distance, evaluate_features, iter_distance_rows, list_metrics, rank_metrics
from reidcompress.evaluation.distance import BLOCK_ROWS


def features_problem(seed: int = 0, num_q: int = 50, num_g: int = 120, dim: int = 16):
    """Random features; pid 0 distractors, and queries 0-2 whose only matches share their camera."""
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((num_q, dim)).astype(np.float32)
    gf = rng.standard_normal((num_g, dim)).astype(np.float32)
    q_pids, q_cams = rng.integers(1, 10, num_q), rng.integers(0, 3, num_q)
    g_pids, g_cams = rng.integers(0, 10, num_g), rng.integers(0, 3, num_g)
    q_pids[:3] = [20, 21, 22]
    g_pids[:3], g_cams[:3] = [20, 21, 22], q_cams[:3]
    return qf, gf, (q_pids, g_pids, q_cams, g_cams)


# --- distances -------------------------------------------------------------------------------


def test_distances_match_their_definitions():
    qf, gf, _ = features_problem()
    q64, g64 = qf.astype(np.float64), gf.astype(np.float64)
    squared = ((q64[:, None, :] - g64[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(compute_distance(qf, gf), squared, rtol=1e-4, atol=1e-4)
    cos = (q64 @ g64.T) / np.linalg.norm(q64, axis=1)[:, None] / np.linalg.norm(g64, axis=1)[None, :]
    np.testing.assert_allclose(compute_distance(qf, gf, "cosine"), 1 - cos, atol=1e-5)
    assert compute_distance(qf, gf).dtype == np.float32


def test_distance_keeps_the_input_kind():
    qf, gf, _ = features_problem()
    out = compute_distance(torch.from_numpy(qf), torch.from_numpy(gf))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), compute_distance(qf, gf))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_row_chunks_are_bit_identical_to_the_full_matrix(metric):
    # More queries than one GEMM block, so chunks straddle block boundaries.
    qf, gf, _ = features_problem(num_q=BLOCK_ROWS + 45, num_g=40, dim=8)
    full = compute_distance(qf, gf, metric)
    for chunk in (1, 7, 100, BLOCK_ROWS, BLOCK_ROWS + 45):
        parts = list(iter_distance_rows(qf, gf, metric, chunk))
        assert [start for start, _ in parts] == list(range(0, len(qf), chunk))
        np.testing.assert_array_equal(np.concatenate([d.numpy() for _, d in parts]), full)


def test_unknown_metric_lists_the_valid_ones():
    qf, gf, _ = features_problem()
    with pytest.raises(InputError, match="cosine, euclidean"):
        compute_distance(qf, gf, "manhattan")
    assert list_metrics() == ["cosine", "euclidean"]


@pytest.mark.parametrize(
    ("qf", "gf", "message"),
    [
        (np.zeros((3, 4), np.float32), np.zeros((5, 6), np.float32), "dimension"),
        (np.zeros(4, np.float32), np.zeros((5, 4), np.float32), "2-D"),
        (np.zeros((3, 4), np.int64), np.zeros((5, 4), np.int64), "floating"),
        (np.zeros((0, 4), np.float32), np.zeros((5, 4), np.float32), "at least one"),
    ],
)
def test_bad_features_raise_input_error(qf, gf, message):
    with pytest.raises(InputError, match=message):
        compute_distance(qf, gf)


# --- evaluate_features -----------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("ties", ["stable", "argsort"])
def test_chunked_features_equal_the_full_matrix_exactly(metric, ties):
    qf, gf, labels = features_problem(1, num_q=BLOCK_ROWS + 30, num_g=90, dim=8)
    full = rank_metrics(compute_distance(qf, gf, metric), *labels, max_rank=20, ties=ties)
    assert full["num_valid_queries"] < len(qf)  # same-camera-only queries were skipped
    for chunk in (1, 13, BLOCK_ROWS, None):
        ours = evaluate_features(qf, gf, *labels, metric=metric, max_rank=20, chunk_size=chunk, ties=ties)
        np.testing.assert_array_equal(ours["cmc"], full["cmc"])
        assert (ours["mAP"], ours["mINP"], ours["num_valid_queries"]) == (
            full["mAP"],
            full["mINP"],
            full["num_valid_queries"],
        )


def test_small_memory_budget_gives_the_same_numbers():
    qf, gf, labels = features_problem(2)
    ref = evaluate_features(qf, gf, *labels)
    ours = evaluate_features(qf, gf, *labels, memory_budget_mb=0.005)  # a few query rows per chunk
    assert (ours["mAP"], ours["mINP"]) == (ref["mAP"], ref["mINP"])


def test_tied_distances_stable_rule_equals_gallery_order():
    # Duplicate gallery features tie exactly; "stable" ranks them in gallery order.
    qf, gf, labels = features_problem(3)
    gf[60:] = gf[:60]
    dist = compute_distance(qf, gf)
    stable = evaluate_features(qf, gf, *labels, ties="stable")
    ref = rank_metrics(dist, *labels, ties="stable")
    assert (stable["mAP"], stable["mINP"]) == (ref["mAP"], ref["mINP"])
    exact = evaluate_features(qf, gf, *labels, ties="argsort")
    assert exact["mAP"] == rank_metrics(dist, *labels)["mAP"]


def test_label_length_mismatch_raises():
    qf, gf, (q_pids, g_pids, q_cams, g_cams) = features_problem()
    with pytest.raises(InputError, match="g_pids has 119"):
        evaluate_features(qf, gf, q_pids, g_pids[1:], q_cams, g_cams)


@pytest.mark.gpu
def test_cuda_features_rank_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    qf, gf, labels = features_problem(4, num_q=BLOCK_ROWS + 30)
    cpu = evaluate_features(qf, gf, *labels)
    gpu = evaluate_features(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda(), *labels)
    assert isinstance(compute_distance(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda()), torch.Tensor)
    assert gpu["mAP"] == pytest.approx(cpu["mAP"], abs=1e-3)  # GPU GEMMs round differently
    np.testing.assert_allclose(gpu["cmc"], cpu["cmc"], atol=0.02)
