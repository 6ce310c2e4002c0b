"""Evaluation protocols (rows, targets, seen items), evaluate() against a brute-force reference,
and faiss retrieval equal to torch retrieval."""
from math import log2

import numpy as np
import pytest
import torch

from dimerec.data.dataset import SeqDataset
from dimerec.metrics import max_over_interests
from dimerec.evaluate import build_rows, evaluate, row_order, sampled_candidates, sampled_metrics, seen_items
from dimerec.models.pop import MostPopular
from dimerec.retrieval import FaissRetriever, TorchRetriever

P = 10  # pad id of the tiny datasets below (n_items = 10)


def tiny(sequences, n_items=10, max_len=3) -> SeqDataset:
    return SeqDataset(name="tiny", sequences=[np.array(s, dtype=np.int64) for s in sequences],
                      n_items=n_items, max_len=max_len)


# ---- protocol rows ---------------------------------------------------------

def test_next_item_rows_are_every_prefix_truncated_and_left_padded():
    data = tiny([[0, 1, 2, 3, 4], [5], [6, 7]])
    rows = build_rows(data, np.array([0, 1, 2]), "next-item")
    assert rows.hist.tolist() == [[P, P, 0], [P, 0, 1], [0, 1, 2], [1, 2, 3],  # user 0: four prefixes
                                  [P, P, 6]]  # user 1 (one item) is skipped; user 2 one row
    assert rows.targets.tolist() == [[1], [2], [3], [4], [7]]
    assert rows.user.tolist() == [0, 0, 0, 0, 2]
    assert rows.cut.tolist() == [1, 2, 3, 4, 1]
    assert rows.hist.dtype == np.int64 and rows.targets.dtype == np.int64


def test_future_rows_split_80_20():
    data = tiny([
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],  # n=10: 8 history (truncated to the last 3), 2 targets
        [3, 4],  # n=2: 1 history, 1 target
        [5],  # skipped
        [1, 2, 3, 4, 5, 6, 9],  # n=7: int(5.6) = 5 history, 2 targets
        [0, 1, 2, 3, 4, 5, 6, 7, 9, 9],  # duplicate targets count once
        [2, 3, 4, 5, 6],  # n=5: 4 history (the last 3 kept), 1 target
    ])
    rows = build_rows(data, np.arange(6), "future")
    assert rows.hist.tolist() == [[5, 6, 7], [P, P, 3], [3, 4, 5], [5, 6, 7], [3, 4, 5]]
    assert rows.targets.tolist() == [[8, 9], [4, -1], [6, 9], [9, -1], [6, -1]]
    assert rows.user.tolist() == [0, 1, 3, 4, 5]
    assert rows.cut.tolist() == [8, 1, 5, 8, 4]


def test_rows_only_for_the_users_asked_and_none_for_short_sequences():
    data = tiny([[0, 1, 2], [3], [4, 5, 6, 7]])
    rows = build_rows(data, np.array([2]), "next-item")
    assert rows.user.tolist() == [2, 2, 2]
    for protocol in ("next-item", "future"):
        empty = build_rows(data, np.array([1]), protocol)
        assert empty.hist.shape == (0, 3) and len(empty.targets) == 0 and len(empty.user) == 0


def test_last_only_keeps_each_users_last_row():
    data = tiny([[0, 1, 2, 3, 4], [5], [6, 7]])
    rows = build_rows(data, np.array([0, 1, 2]), "next-item", last_only=True)
    assert rows.hist.tolist() == [[1, 2, 3], [P, P, 6]]  # the history before each user's final item
    assert rows.targets.tolist() == [[4], [7]]
    assert rows.user.tolist() == [0, 2] and rows.cut.tolist() == [4, 1]


@pytest.mark.parametrize("protocol", ["next-item", "future"])
def test_last_only_equals_the_last_of_the_full_rows(planted_small, protocol):
    users = planted_small.split(0).test
    full = build_rows(planted_small, users, protocol)
    last = build_rows(planted_small, users, protocol, last_only=True)
    ends = np.flatnonzero(np.r_[full.user[1:] != full.user[:-1], True])  # the last row of each user
    assert len(ends) == len(users)
    for field in ("hist", "targets", "user", "cut"):
        np.testing.assert_array_equal(getattr(last, field), getattr(full, field)[ends], err_msg=field)
    if protocol == "next-item":  # many rows per user, and the one kept predicts the user's final item
        assert len(full.user) > 2 * len(users)
        assert last.targets[:, 0].tolist() == [planted_small.sequences[u][-1] for u in last.user]


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol"):
        build_rows(tiny([[0, 1]]), np.array([0]), "leave-one-out")


# ---- seen-item masking -----------------------------------------------------

def ranked_by_id(n_items=60, max_len=3) -> MostPopular:
    """A hand-made popularity model: item 0 is the most popular, then 1, 2, ...: its ranking is the id order."""
    model = MostPopular(n_items, max_len, MostPopular.Config())
    model.counts = torch.arange(n_items, 0, -1, dtype=torch.float32)
    return model


def test_mask_seen_changes_metrics_as_computed_by_hand():
    data = tiny([[0, 1, 50]], n_items=60)
    model, users = ranked_by_id(), np.array([0])
    # rows: ([0] -> 1) and ([0, 1] -> 50); unmasked top 50 = 0..49
    plain = evaluate(model, data, users)["final"]
    assert plain["HR@10"] == 0.5 and plain["HR@50"] == 0.5
    assert plain["NDCG@10"] == pytest.approx((1 / log2(3)) / 2)
    # masked: row 1 ranks 1..50 (target at rank 0), row 2 ranks 2..51 (target 50 at rank 48)
    masked = evaluate(model, data, users, mask_seen=True)["final"]
    assert masked["HR@20"] == 0.5 and masked["HR@50"] == 1.0
    assert masked["NDCG@50"] == pytest.approx((1 + 1 / log2(50)) / 2)
    # future: history [0, 1], target 50, seen {0, 1}
    future = evaluate(model, data, users, "future", mask_seen=True)["final"]
    assert future["HR@50"] == 1.0 and future["NDCG@50"] == pytest.approx(1 / log2(50))


class RecordingRetriever(TorchRetriever):
    """The real torch retriever, keeping what each search excluded and returned."""

    def __init__(self):
        self.calls = []

    def search(self, user_vectors, k, exclude=None):
        top = super().search(user_vectors, k, exclude)
        self.calls.append((exclude, top))
        return top


@pytest.mark.parametrize("protocol", ["next-item", "future"])
def test_mask_seen_removes_exactly_the_seen_items(protocol):
    # seen = the whole sequence before the row's history ends, not only the last max_len items;
    # a repeated target (user 1) is seen too, and is removed
    sequences = [[0, 1, 2, 3, 4, 5, 52], [7, 3, 7], [9, 8]]
    data = tiny(sequences, n_items=60)
    rec = RecordingRetriever()
    evaluate(ranked_by_id(), data, np.arange(3), protocol, mask_seen=True, retriever=rec, batch_size=2)
    rows = build_rows(data, np.arange(3), protocol)
    excluded = [list(e) for exclude, _ in rec.calls for e in exclude]
    returned = np.concatenate([top.numpy() for _, top in rec.calls])
    assert len(excluded) == len(returned) == len(rows.user)
    for row, (u, cut) in enumerate(zip(rows.user, rows.cut)):
        seen = sequences[u][:cut]
        assert excluded[row] == seen
        assert returned[row].tolist() == [i for i in range(60) if i not in seen][:50]
    # without masking nothing is excluded
    rec = RecordingRetriever()
    evaluate(ranked_by_id(), data, np.arange(3), protocol, retriever=rec)
    assert all(exclude is None for exclude, _ in rec.calls)
    assert all(top.tolist() == [list(range(50))] * len(top) for _, top in rec.calls)


# ---- evaluate() against a brute-force reference ------------------------------

def reference_metrics(model, data, users, protocol, mask_seen, popularity=None):
    """Dense scores for every row, a stable argsort, metrics by explicit loops."""
    rows = build_rows(data, users, protocol)
    with torch.no_grad():
        scores = torch.einsum("bkd,nd->bkn", model.user_vectors(torch.from_numpy(rows.hist)),
                              model.item_vectors()).amax(1).numpy()
    sums = {f"{m}@{n}": 0.0 for m in ("HR", "Recall", "NDCG", "MRR") for n in (10, 20, 50)}
    recommended = {n: [] for n in (10, 20, 50)}  # every slot of every row's top n
    for r in range(len(scores)):
        s = scores[r].copy()
        if mask_seen:
            s[data.sequences[rows.user[r]][:rows.cut[r]]] = -np.inf
        ranking = np.argsort(-s, kind="stable")[:50]
        targets = {int(t) for t in rows.targets[r] if t >= 0}
        for n in (10, 20, 50):
            hits = [i for i, item in enumerate(ranking[:n]) if item in targets]
            sums[f"HR@{n}"] += bool(hits)
            sums[f"Recall@{n}"] += len(hits) / len(targets)
            ideal = sum(1 / log2(i + 2) for i in range(min(len(targets), n)))
            sums[f"NDCG@{n}"] += sum(1 / log2(i + 2) for i in hits) / ideal
            sums[f"MRR@{n}"] += 1 / (hits[0] + 1) if hits else 0.0
            recommended[n] += [int(item) for item in ranking[:n]]
    out = {k: v / len(scores) for k, v in sums.items()}
    if popularity is not None:
        head = set(sorted(range(data.n_items), key=lambda i: (-popularity[i], i))[:int(np.ceil(0.2 * data.n_items))])
        for n, items in recommended.items():
            exposure = np.sort(np.bincount(items, minlength=data.n_items)).astype(float)  # ascending
            k = len(exposure)
            out[f"ItemCoverage@{n}"] = len(set(items)) / data.n_items
            out[f"Gini@{n}"] = sum((2 * (i + 1) - k - 1) * x for i, x in enumerate(exposure)) / (k * len(items))
            out[f"AveragePopularity@{n}"] = sum(popularity[i] for i in items) / len(items)
            out[f"TailPercentage@{n}"] = sum(i not in head for i in items) / len(items)
    return out


@pytest.mark.parametrize("protocol", ["next-item", "future"])
@pytest.mark.parametrize("mask_seen", [False, True])
def test_evaluate_matches_brute_force(trained_sa, planted_small, protocol, mask_seen):
    model = trained_sa[0]
    users = planted_small.split(0).valid
    got = evaluate(model, planted_small, users, protocol, mask_seen=mask_seen, batch_size=100)["final"]
    expected = reference_metrics(model, planted_small, users, protocol, mask_seen)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got["HR@50"] > 0.3  # the trained model is not trivial, so the comparison is not 0 == 0


@pytest.mark.parametrize("protocol", ["next-item", "future"])
def test_evaluate_beyond_accuracy_matches_brute_force(trained_sa, planted_small, protocol):
    model, split = trained_sa[0], planted_small.split(0)
    popularity = planted_small.item_popularity(split.train)
    plain = evaluate(model, planted_small, split.valid, protocol, batch_size=100)["final"]
    got = evaluate(model, planted_small, split.valid, protocol, batch_size=100, popularity=popularity)["final"]
    assert {k: got[k] for k in plain} == plain  # the popularity adds keys; it changes none of the others
    expected = reference_metrics(model, planted_small, split.valid, protocol, False, popularity)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["ItemCoverage@10"] <= got["ItemCoverage@50"] <= 1 and 0 < got["Gini@50"] < 1
    assert 0 < got["TailPercentage@50"] < 1 and got["AveragePopularity@50"] > 1


def test_evaluate_subsample_is_seeded_and_restores_train_mode(trained_sa, planted_small):
    model = trained_sa[0]
    users = planted_small.split(0).valid
    model.train()
    a = evaluate(model, planted_small, users, max_rows=200, seed=3)
    assert model.training
    assert a == evaluate(model, planted_small, users, max_rows=200, seed=3)
    assert a != evaluate(model, planted_small, users)


# ---- the sampled protocol (sanity checks against the baselines' papers) ---------

def test_sampled_candidates_are_distinct_unseen_items_then_the_target(planted_small):
    users = planted_small.split(0).test
    rows = build_rows(planted_small, users, "next-item", last_only=True)
    order = row_order(len(rows.hist), None, 0)
    cands = sampled_candidates(planted_small, rows, order, 100, seed=0)
    assert cands.shape == (len(rows.hist), 101)
    for r in range(len(cands)):
        negatives = cands[r, :-1]
        assert len(set(negatives)) == 100 and cands[r, -1] == rows.targets[r, 0]
        assert not set(negatives) & set(planted_small.sequences[rows.user[r]].tolist())
    assert (cands == sampled_candidates(planted_small, rows, order, 100, seed=0)).all()


def test_sampled_metrics_match_a_brute_force_rank(trained_sa, planted_small):
    model = trained_sa[0]
    users = planted_small.split(0).test
    got = sampled_metrics(model, planted_small, users, 100, seed=1)
    rows = build_rows(planted_small, users, "next-item", last_only=True)
    cands = sampled_candidates(planted_small, rows, row_order(len(rows.hist), None, 1), 100, seed=1)
    with torch.no_grad():
        scores = torch.einsum("bkd,nd->bkn", model.user_vectors(torch.from_numpy(rows.hist)),
                              model.item_vectors()).amax(1).numpy()
    ranks = [(scores[r, cands[r, :-1]] >= scores[r, cands[r, -1]]).sum() for r in range(len(cands))]
    assert got["HR@10"] == pytest.approx(np.mean([rank < 10 for rank in ranks]))
    assert got["NDCG@10"] == pytest.approx(np.mean([(rank < 10) / log2(rank + 2) for rank in ranks]))
    assert got["HR@10"] > 10 / 101 + 0.2  # a trained model ranks far above chance


def test_sampled_metrics_refuse_more_negatives_than_unseen_items():
    from dimerec.errors import DimeRecError

    with pytest.raises(DimeRecError, match="only 7 unseen items"):
        sampled_metrics(MostPopular(10, 3, MostPopular.Config()), tiny([[0, 1, 2]]), np.array([0]), 8)


# ---- faiss retrieval == torch retrieval --------------------------------------

def both_retrievers(item_vectors):
    f, t = FaissRetriever(), TorchRetriever()
    f.index(item_vectors)
    t.index(item_vectors)
    return f, t


def assert_same_lists_up_to_float_ties(got, want, scores, most_differing=1e-3):
    """The lists are equal, except that two items whose scores agree to float32 rounding may trade places.

    faiss and torch sum each inner product in their own order, and which order is the machine's (its SIMD
    width): on one CI machine items 44 and 45 of one row traded places, 2 of 49,500 entries. `scores`
    [B, n_items] are the float64 scores; a swap of items whose scores differ beyond rounding still fails.
    """
    got, want = np.asarray(got), np.asarray(want)
    differ = got != want
    rows = np.nonzero(differ)[0]
    np.testing.assert_allclose(scores[rows, got[differ]], scores[rows, want[differ]], rtol=1e-5, atol=1e-6)
    assert differ.mean() <= most_differing, f"{differ.sum()} of {differ.size} entries differ"


@pytest.mark.parametrize("protocol", ["next-item", "future"])
def test_faiss_top50_equals_torch_top50_for_a_trained_model(trained_sa, planted_small, protocol):
    model = trained_sa[0]
    rows = build_rows(planted_small, planted_small.split(0).valid, protocol)
    with torch.no_grad():
        users = model.user_vectors(torch.from_numpy(rows.hist))
        faiss_r, torch_r = both_retrievers(model.item_vectors())
        scores = max_over_interests(users.double(), model.item_vectors().double()).numpy()
    assert users.shape[1] == 4  # K interests merged by faiss
    assert_same_lists_up_to_float_ties(faiss_r.search(users, 50).numpy(), torch_r.search(users, 50).numpy(), scores)
    exclude = seen_items(planted_small, rows, np.arange(len(rows.user)))
    f_top, t_top = faiss_r.search(users, 50, exclude=exclude), torch_r.search(users, 50, exclude=exclude)
    assert_same_lists_up_to_float_ties(f_top.numpy(), t_top.numpy(), scores)
    assert not any(set(top.tolist()) & set(e.tolist()) for top, e in zip(f_top, exclude))
    # and the metrics agree through evaluate(), to the two rows a float tie may move across a cut-off
    users_ids = planted_small.split(0).valid
    for mask in (False, True):
        by_faiss = evaluate(model, planted_small, users_ids, protocol, mask_seen=mask, retriever=FaissRetriever())
        by_torch = evaluate(model, planted_small, users_ids, protocol, mask_seen=mask, retriever=TorchRetriever())
        assert by_faiss.keys() == by_torch.keys() == {"final"}
        assert by_faiss["final"] == pytest.approx(by_torch["final"], abs=2 / len(rows.user))


def test_faiss_breaks_ties_by_lower_id_like_torch(planted_small):
    # MostPopular scores are counts: hundreds of items share a few dozen values, so the 50th slot is tied
    model = MostPopular(planted_small.n_items, planted_small.max_len, MostPopular.Config())
    model.fit_statistics(planted_small, planted_small.split(0).train)
    faiss_r, torch_r = both_retrievers(model.item_vectors())
    users = torch.ones(3, 1, 1)
    np.testing.assert_array_equal(faiss_r.search(users, 50).numpy(), torch_r.search(users, 50).numpy())
    exclude = [np.array([], dtype=np.int64), np.arange(0, 480, 7), np.array([3, 5, 8])]
    np.testing.assert_array_equal(faiss_r.search(users, 50, exclude).numpy(),
                                  torch_r.search(users, 50, exclude).numpy())
    # K = 2 interests over small-integer vectors: ties everywhere
    rng = np.random.default_rng(0)
    items = torch.from_numpy(rng.integers(0, 3, size=(300, 2)).astype(np.float32))
    users = torch.from_numpy(rng.integers(-1, 3, size=(40, 2, 2)).astype(np.float32))
    faiss_r, torch_r = both_retrievers(items)
    exclude = [rng.choice(300, size=rng.integers(0, 30), replace=False) for _ in range(40)]
    for ex in (None, exclude):
        np.testing.assert_array_equal(faiss_r.search(users, 50, ex).numpy(), torch_r.search(users, 50, ex).numpy())


def test_scoring_records_no_autograd_graph(trained_sa, planted_small):
    """Issue 18, bug 1: evaluation used to build an autograd graph of every user vector (the no_grad decorator
    sat on a NumPy helper): a ComiRec-SA user vector had requires_grad=True inside evaluate."""
    model, _, _ = trained_sa
    seen = []

    def user_fn(hist):
        vectors = model.user_vectors(hist)
        seen.append((torch.is_grad_enabled(), vectors.requires_grad))
        return {"final": vectors}

    evaluate(model, planted_small, planted_small.split(0).valid, user_fn=user_fn, max_rows=300)
    sampled_metrics(model, planted_small, planted_small.split(0).valid, 20, max_rows=50)
    assert seen and all(state == (False, False) for state in seen)
    assert torch.is_grad_enabled()  # and the caller's grad mode is back
