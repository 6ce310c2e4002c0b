"""Ranking metrics against hand-computed cases: HR, Recall, standard NDCG, ties, K interests."""
from math import log2

import numpy as np
import pytest
import torch

from dimerec.metrics import (CUTOFFS, METRIC_KEYS, max_over_interests, mean_metrics, pad_targets, rank_metrics,
                             topk_items)

RANKED = np.arange(50)[None, :]  # one row whose top 50 are the items 0, 1, ..., 49 in that order


def metrics_of(targets, topk=RANKED):
    out = rank_metrics(topk, pad_targets([np.asarray(t) for t in targets]))
    return {k: float(v[0]) for k, v in out.items()}


def test_keys_and_cutoffs():
    assert CUTOFFS == (10, 20, 50)
    out = rank_metrics(RANKED, np.array([[3]]))
    assert tuple(out) == METRIC_KEYS
    assert set(METRIC_KEYS) == {f"{m}@{n}" for m in ("HR", "Recall", "NDCG") for n in (10, 20, 50)}


@pytest.mark.parametrize("rank, expected", [
    # rank (0-based) of the only target -> {metric: value}
    (0, {"HR@10": 1, "HR@20": 1, "HR@50": 1, "NDCG@10": 1.0, "NDCG@20": 1.0, "NDCG@50": 1.0}),
    (9, {"HR@10": 1, "HR@20": 1, "HR@50": 1, "NDCG@10": 1 / log2(11), "NDCG@50": 1 / log2(11)}),
    (10, {"HR@10": 0, "HR@20": 1, "NDCG@10": 0.0, "NDCG@20": 1 / log2(12), "NDCG@50": 1 / log2(12)}),
    (20, {"HR@20": 0, "HR@50": 1, "Recall@20": 0, "Recall@50": 1, "NDCG@20": 0.0, "NDCG@50": 1 / log2(22)}),
    (49, {"HR@20": 0, "HR@50": 1, "NDCG@50": 1 / log2(51)}),
])
def test_single_target_at_each_cutoff_boundary(rank, expected):
    got = metrics_of([[rank]])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    # one target: Recall equals HR
    for n in CUTOFFS:
        assert got[f"Recall@{n}"] == got[f"HR@{n}"]


def test_target_absent_from_top_50_scores_zero_everywhere():
    got = metrics_of([[77]])
    assert all(v == 0.0 for v in got.values())


def test_several_targets_future_protocol():
    # targets 2 (rank 2), 15 (rank 15), 99 (not retrieved)
    got = metrics_of([[2, 15, 99]])
    ideal = 1 + 1 / log2(3) + 1 / log2(4)  # min(|targets|, N) = 3 hits at the top
    assert got["HR@10"] == got["HR@20"] == got["HR@50"] == 1
    assert got["Recall@10"] == pytest.approx(1 / 3)
    assert got["Recall@20"] == pytest.approx(2 / 3)
    assert got["Recall@50"] == pytest.approx(2 / 3)
    assert got["NDCG@10"] == pytest.approx((1 / log2(4)) / ideal)
    assert got["NDCG@20"] == pytest.approx((1 / log2(4) + 1 / log2(17)) / ideal)
    assert got["NDCG@50"] == pytest.approx(got["NDCG@20"])


def test_ndcg_is_standard_not_comirec_variant():
    # two targets, only the first is retrieved (at rank 0): the standard NDCG divides by the ideal of 2 hits,
    # ComiRec's variant (ideal over the hits only) would give 1.0
    got = metrics_of([[0, 99]])
    assert got["NDCG@50"] == pytest.approx(1 / (1 + 1 / log2(3)))
    assert got["NDCG@50"] < 0.99


def test_ideal_dcg_is_over_min_of_targets_and_cutoff():
    # 15 targets filling ranks 0..14: at N=10 the ideal is 10 hits, so a perfect top 10 scores 1
    got = metrics_of([list(range(15))])
    assert got["NDCG@10"] == pytest.approx(1.0)
    assert got["NDCG@20"] == pytest.approx(1.0)
    assert got["Recall@10"] == pytest.approx(10 / 15)
    assert got["Recall@20"] == pytest.approx(1.0)
    # 15 targets at ranks 5..19: at N=10 five hits at ranks 5..9 over an ideal of ten
    got = metrics_of([list(range(5, 20))])
    dcg10 = sum(1 / log2(r + 2) for r in range(5, 10))
    idcg10 = sum(1 / log2(r + 2) for r in range(10))
    assert got["NDCG@10"] == pytest.approx(dcg10 / idcg10)
    dcg20 = sum(1 / log2(r + 2) for r in range(5, 20))
    idcg15 = sum(1 / log2(r + 2) for r in range(15))
    assert got["NDCG@20"] == pytest.approx(dcg20 / idcg15)
    assert got["Recall@10"] == pytest.approx(5 / 15)


def test_duplicate_targets_count_once():
    assert pad_targets([np.array([7, 3, 7]), np.array([1])]).tolist() == [[3, 7], [1, -1]]
    got = metrics_of([[4, 4]])  # one distinct target at rank 4
    assert got["Recall@10"] == 1.0
    assert got["NDCG@10"] == pytest.approx(1 / log2(6))


def test_rows_with_different_numbers_of_targets():
    topk = np.stack([np.arange(50), np.arange(50)[::-1], np.arange(100, 150)])
    targets = pad_targets([np.array([0]), np.array([0, 1, 2]), np.array([5])])
    out = rank_metrics(topk, targets)
    assert out["HR@50"].tolist() == [1, 1, 0]
    # row 1: items 0, 1, 2 sit at ranks 49, 48, 47
    assert out["Recall@20"].tolist() == [1, 0, 0]
    assert out["Recall@50"].tolist() == [1, 1, 0]
    ideal3 = 1 + 1 / log2(3) + 1 / log2(4)
    assert out["NDCG@50"][1] == pytest.approx((1 / log2(51) + 1 / log2(50) + 1 / log2(49)) / ideal3)
    means = mean_metrics(out)
    assert means["HR@50"] == pytest.approx(2 / 3)
    assert all(isinstance(v, float) for v in means.values())
    assert mean_metrics({k: np.zeros(0) for k in METRIC_KEYS}) == {k: 0.0 for k in METRIC_KEYS}


def test_only_the_first_50_of_a_longer_ranking_count():
    topk = np.arange(80)[None, :]
    out = rank_metrics(topk, np.array([[60]]))
    assert out["HR@50"][0] == 0


# ---- top-k with ties -------------------------------------------------------

@pytest.mark.parametrize("scores, k, expected", [
    ([0.1, 0.9, 0.5], 3, [1, 2, 0]),
    ([2., 5., 5., 1., 0.], 3, [1, 2, 0]),  # tie inside the top: lower id first
    ([1., 3., 3., 2., 3.], 2, [1, 2]),  # three tied for two slots: the two lowest ids
    ([1., 3., 3., 2., 3.], 3, [1, 2, 4]),
    ([1., 3., 3., 2., 3.], 4, [1, 2, 4, 3]),
    ([.5, .5, .5, .5], 2, [0, 1]),
    ([-np.inf, 1., -np.inf], 2, [1, 0]),  # fewer finite scores than k
    ([3., 1.], 5, [0, 1]),  # k larger than the catalogue
])
def test_topk_items_hand_cases(scores, k, expected):
    assert topk_items(torch.tensor([scores]), k).tolist() == [expected]


def test_topk_items_mixed_rows_with_and_without_boundary_ties():
    scores = torch.tensor([[4., 1., 1., 1., 0.],  # tie at the boundary of k=2
                           [0., 1., 2., 3., 4.],  # no tie
                           [1., 1., 2., 2., 2.]])  # tie inside and at the boundary
    assert topk_items(scores, 2).tolist() == [[0, 1], [4, 3], [2, 3]]


def test_topk_items_matches_a_lexsort_reference_on_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(64, 200)).astype(np.float32)  # ~33 items per score value
    got = topk_items(torch.from_numpy(scores), 50).numpy()
    ids = np.arange(200)
    expected = np.stack([np.lexsort((ids, -row))[:50] for row in scores])
    np.testing.assert_array_equal(got, expected)


# ---- K interests -----------------------------------------------------------

def test_max_over_interests_hand_case():
    items = torch.tensor([[2., 0.], [0., 3.], [1., 1.], [-1., -1.]])
    users = torch.tensor([[[1., 0.], [0., 1.]],  # interest 1 likes item 0, interest 2 likes item 1
                          [[1., 1.], [-1., 0.]]])
    scores = max_over_interests(users, items)
    assert scores.tolist() == [[2., 3., 1., -1.], [2., 3., 2., 1.]]
    # the max, not the mean: the second user's mean scores (0, 1.5, 0.5, -0.5) would rank 1, 2, 0, 3
    assert topk_items(scores, 4).tolist() == [[1, 0, 2, 3], [1, 0, 2, 3]]


def test_max_over_interests_single_interest_is_dot_product():
    rng = np.random.default_rng(1)
    users = torch.from_numpy(rng.normal(size=(5, 1, 8)))
    items = torch.from_numpy(rng.normal(size=(30, 8)))
    torch.testing.assert_close(max_over_interests(users, items), users[:, 0] @ items.T)
