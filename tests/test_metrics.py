"""Ranking metrics against hand-computed cases: HR, Recall, standard NDCG, ties, K interests."""
from math import log2

import numpy as np
import pytest
import torch

from dimerec.metrics import (BEYOND_KEYS, CUTOFFS, METRIC_KEYS, MRR_KEYS, beyond_accuracy, exposure_counts, gini,
                             long_tail, max_over_interests, mean_metrics, pad_targets, rank_metrics, ranking_metrics,
                             reciprocal_ranks, topk_items)

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


# ---- MRR and the beyond-accuracy aggregates ------------------------------------------------------

def test_mrr_is_one_over_the_rank_of_the_first_target_within_each_cutoff():
    # rows: a target at rank 3 (0-based 2); targets at ranks 15 and 12 (the first is 12); at rank 30; absent
    targets = pad_targets([np.array([2]), np.array([14, 11]), np.array([29]), np.array([99])])
    got = reciprocal_ranks(np.repeat(RANKED, 4, axis=0), targets)
    assert tuple(got) == MRR_KEYS
    assert got["MRR@10"] == pytest.approx([1 / 3, 0, 0, 0])
    assert got["MRR@20"] == pytest.approx([1 / 3, 1 / 12, 0, 0])
    assert got["MRR@50"] == pytest.approx([1 / 3, 1 / 12, 1 / 30, 0])
    assert mean_metrics(got)["MRR@50"] == pytest.approx((1 / 3 + 1 / 12 + 1 / 30) / 4)
    # a single target at rank 1: MRR = HR = NDCG = 1
    assert reciprocal_ranks(RANKED, np.array([[0]]))["MRR@10"][0] == 1.0


def test_gini_hand_cases():
    assert gini(np.array([3, 3, 3, 3])) == 0.0  # equal exposure
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)  # one item takes all: (n - 1) / n
    # sorted [0, 0, 1, 1, 2], n 5, sum 4: (-4*0 - 2*0 + 0*1 + 2*1 + 4*2) / (5 * 4) = 10 / 20
    assert gini(np.array([2, 1, 1, 0, 0])) == pytest.approx(0.5)
    assert gini(np.zeros(4)) == 0.0


def test_long_tail_is_everything_outside_the_most_popular_fifth():
    # 10 items, head = the 2 most popular; items 1 and 4 tie on 7, the lower id (1) wins the second seat
    popularity = np.array([9, 7, 0, 3, 7, 1, 0, 0, 2, 0])
    assert np.flatnonzero(~long_tail(popularity)).tolist() == [0, 1]
    assert long_tail(np.arange(3)).tolist() == [True, True, False]  # ceil(0.2 * 3) = 1 head item


def test_beyond_accuracy_on_hand_built_lists():
    # 5 items, training popularity 10, 5, 3, 1, 0: the head is item 0 alone (ceil(0.2 * 5) = 1)
    popularity = np.array([10, 5, 3, 1, 0])
    top = np.array([[0, 1], [0, 2]])  # two rows' ranked lists
    exposure = exposure_counts(top, 5, cutoffs=(1, 2))
    assert exposure[1].tolist() == [2, 0, 0, 0, 0] and exposure[2].tolist() == [2, 1, 1, 0, 0]
    got = beyond_accuracy(exposure, popularity)
    assert list(got) == [f"{m}@{n}" for m in ("ItemCoverage", "Gini", "AveragePopularity", "TailPercentage")
                         for n in (1, 2)]
    assert got["ItemCoverage@1"] == pytest.approx(1 / 5) and got["ItemCoverage@2"] == pytest.approx(3 / 5)
    assert got["Gini@1"] == pytest.approx(4 / 5) and got["Gini@2"] == pytest.approx(0.5)
    assert got["AveragePopularity@1"] == pytest.approx(10.0)
    assert got["AveragePopularity@2"] == pytest.approx((10 + 5 + 10 + 3) / 4)
    assert got["TailPercentage@1"] == 0.0 and got["TailPercentage@2"] == pytest.approx(2 / 4)


def test_exposure_counts_add_up_over_batches_and_skip_missing_ids():
    top = np.array([[4, 1, 0], [1, 4, 2], [3, -1, -1]])
    whole = exposure_counts(top, 6)
    halves = [exposure_counts(top[:2], 6), exposure_counts(top[2:], 6)]
    for n in CUTOFFS:
        assert np.array_equal(whole[n], halves[0][n] + halves[1][n])
    assert whole[10].tolist() == [1, 2, 1, 1, 2, 0]
    assert tuple(beyond_accuracy(whole, np.ones(6))) == BEYOND_KEYS
    assert beyond_accuracy(exposure_counts(np.zeros((0, 50), np.int64), 6), np.ones(6))["Gini@50"] == 0.0


def test_ranking_metrics_is_rank_metrics_and_reciprocal_ranks_from_one_comparison():
    rng = np.random.default_rng(0)
    topk = np.stack([rng.permutation(60)[:50] for _ in range(8)])
    topk[0, -5:] = -1  # a retriever's "none"
    targets = pad_targets([rng.integers(0, 60, size=k) for k in (1, 2, 3, 1, 4, 1, 2, 5)])
    for cutoffs in (CUTOFFS, (5,)):
        both = ranking_metrics(topk, targets, cutoffs)
        apart = {**rank_metrics(topk, targets, cutoffs), **reciprocal_ranks(topk, targets, cutoffs)}
        assert list(both) == list(apart)
        assert all(np.array_equal(both[k], apart[k]) for k in apart)


# ---- issue 31: a catalogue smaller than a cutoff --------------------------------------------------------------

def test_a_catalogue_smaller_than_the_cutoffs_is_ranked_whole_and_every_metric_is_defined():
    """10 items: every list is the whole catalogue, so @20 and @50 are @10 (HR@50 is HR@10-of-10)."""
    topk = np.array([[3, 1, 4, 0, 5, 9, 2, 6, 8, 7]])
    targets = pad_targets([np.array([4, 7])])  # ranks 3 and 10
    out = {k: float(v[0]) for k, v in {**rank_metrics(topk, targets), **reciprocal_ranks(topk, targets)}.items()}
    ndcg = (1 / log2(4) + 1 / log2(11)) / (1 + 1 / log2(3))
    for n in CUTOFFS:
        assert out[f"HR@{n}"] == 1.0 and out[f"Recall@{n}"] == 1.0
        assert out[f"NDCG@{n}"] == pytest.approx(ndcg)
        assert out[f"MRR@{n}"] == pytest.approx(1 / 3)
    counts = exposure_counts(topk, 10)
    assert all(counts[n].sum() == 10 for n in CUTOFFS)
    assert beyond_accuracy(counts, np.arange(10))["ItemCoverage@50"] == 1.0


def test_two_items_and_a_miss():
    out = rank_metrics(np.array([[1, 0]]), pad_targets([np.array([5])]))
    assert all(float(v[0]) == 0.0 for v in out.values())
