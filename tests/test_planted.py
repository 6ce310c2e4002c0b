"""The planted-interests world: determinism, ground-truth consistency, drift, size."""
import re
import time

import numpy as np
import pytest

from dimerec.data.dataset import SeqDataset
from dimerec.data.planted import PlantedParams, make_planted


@pytest.fixture(scope="module")
def world() -> SeqDataset:
    return make_planted(seed=0)


@pytest.fixture(scope="module")
def small() -> SeqDataset:
    return make_planted(seed=3, n_users=300)


def _same(a: SeqDataset, b: SeqDataset) -> bool:
    if a.n_items != b.n_items or len(a.sequences) != len(b.sequences):
        return False
    if a.titles != b.titles or a.item_categories != b.item_categories:
        return False
    if not all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences)):
        return False
    ga, gb = a.ground_truth, b.ground_truth
    for key in ("user_interests", "interest_weights", "emitting_interest", "emitting_slot", "chained"):
        if not all(np.array_equal(x, y) for x, y in zip(ga[key], gb[key])):
            return False
    return np.array_equal(ga["item_category"], gb["item_category"])


def test_same_seed_gives_identical_world(small):
    assert _same(small, make_planted(seed=3, n_users=300))


def test_different_seed_gives_different_world(small):
    other = make_planted(seed=4, n_users=300)
    assert not _same(small, other)
    differing = sum(not np.array_equal(a, b) for a, b in zip(small.sequences, other.sequences))
    assert differing > 250
    assert small.titles != other.titles


def test_dataset_shape_and_statistics(world):
    assert isinstance(world, SeqDataset)
    assert world.name == "planted"
    assert world.max_len == 20
    assert world.n_users == 2000
    assert world.n_items == 12 * 40
    assert len(world.titles) == len(world.item_categories) == len(world.raw_item_ids) == world.n_items
    lengths = np.array([len(s) for s in world.sequences])
    assert lengths.min() >= 15 and lengths.max() <= 60
    assert 32 <= lengths.mean() <= 38
    assert 60_000 <= world.n_interactions <= 80_000
    assert world.stats()["categories"] == 12
    # every item is used, and no item dominates
    counts = world.item_popularity(np.arange(world.n_users))
    assert (counts > 0).all()
    assert counts.max() / counts.sum() < 0.02


def test_sequences_nonempty_in_range_no_immediate_repeats(world):
    for seq in world.sequences:
        assert len(seq) > 0
        assert seq.dtype == np.int64
        assert seq.min() >= 0 and seq.max() < world.n_items
        assert not (seq[1:] == seq[:-1]).any()


def test_categories_and_items(world):
    gt = world.ground_truth
    names = gt["category_names"]
    ic = gt["item_category"]
    assert len(names) == len(set(names)) == 12
    assert ic.shape == (world.n_items,)
    assert np.array_equal(np.bincount(ic, minlength=12), np.full(12, 40))
    assert world.item_categories == [[names[c]] for c in ic]
    assert world.category_names == sorted(names)
    # within-category popularity is a distribution per category, and not uniform
    pop = gt["item_pop"]
    np.testing.assert_allclose(np.bincount(ic, weights=pop), np.ones(12))
    assert pop.max() > 3 * pop.min()
    np.testing.assert_allclose(gt["category_prior"].sum(), 1.0)
    # chain positions: each category holds positions 0..m-1 exactly once
    for c in range(12):
        assert sorted(gt["item_chain_pos"][ic == c].tolist()) == list(range(40))


def test_titles_unique_and_readable(world):
    gt = world.ground_truth
    assert len(set(world.titles)) == world.n_items
    pattern = re.compile(r"^[A-Z][A-Za-z ]+(?: \d+)? · [A-Z][a-z]+ [A-Z][a-z]+(?: \d+)?$")
    for i, title in enumerate(world.titles):
        assert pattern.match(title), title
        assert title.startswith(gt["category_names"][gt["item_category"][i]] + " · ")
        assert not title.startswith("item ")


def test_ground_truth_consistency(world):
    gt = world.ground_truth
    ic = gt["item_category"]
    K = PlantedParams().max_interests
    n_noise = n_steps = 0
    for u, seq in enumerate(world.sequences):
        ui = gt["user_interests"][u]
        uw = gt["interest_weights"][u]
        em = gt["emitting_interest"][u]
        slot = gt["emitting_slot"][u]
        assert ui.shape == (len(seq), K) and uw.shape == (len(seq), K)
        assert em.shape == slot.shape == gt["chained"][u].shape == (len(seq),)
        held = ui >= 0
        k = held.sum(axis=1)
        # a constant number (2..4) of interests, in the leading slots, -1 padded
        assert (k == k[0]).all() and 2 <= k[0] <= 4
        assert held[:, : k[0]].all() and not held[:, k[0]:].any()
        assert ui.max() < 12
        for row in ui:
            assert len(set(row[row >= 0].tolist())) == k[0]  # distinct categories
        np.testing.assert_allclose(uw.sum(axis=1), 1.0)
        assert (uw[~held] == 0).all() and (uw[held] > 0).all()
        noise = em == -1
        assert np.array_equal(noise, slot == -1)
        steps = np.flatnonzero(~noise)
        # the emitting interest is the item's category and one of the user's interests then
        assert np.array_equal(em[steps], ic[seq[steps]])
        assert np.array_equal(ui[steps, slot[steps]], em[steps])
        assert not gt["chained"][u][noise].any()
        n_noise += int(noise.sum())
        n_steps += len(seq)
    assert 0.03 < n_noise / n_steps < 0.07  # p_noise = 0.05


def test_slots_emit_in_proportion_to_their_weights(world):
    gt = world.ground_truth
    K = PlantedParams().max_interests
    emitted, expected = np.zeros(K), np.zeros(K)
    for u in range(world.n_users):
        slot, w = gt["emitting_slot"][u], gt["interest_weights"][u]
        steps = np.flatnonzero(slot >= 0)
        emitted += np.bincount(slot[steps], minlength=K)
        expected += w[steps].sum(axis=0)
    np.testing.assert_allclose(emitted / emitted.sum(), expected / expected.sum(), atol=0.01)
    assert (emitted[1:] > 0).all()


def test_chain_steps_follow_neighbours(world):
    gt = world.ground_truth
    pos, m = gt["item_chain_pos"], 40
    n_chained = n_interest = 0
    for u, seq in enumerate(world.sequences):
        em, chained = gt["emitting_interest"][u], gt["chained"][u]
        last: dict[int, int] = {}
        for t, item in enumerate(seq):
            c = int(em[t])
            if c < 0:
                continue
            n_interest += 1
            if chained[t]:
                n_chained += 1
                assert c in last
                assert (pos[item] - last[c]) % m in (1, 2)
            last[c] = int(pos[item])
        if u >= 300:
            break
    assert 0.3 < n_chained / n_interest < 0.6


def test_interests_drift(world):
    gt = world.ground_truth
    changed = 0
    for ui in gt["user_interests"]:
        first, last = set(ui[0].tolist()), set(ui[-1].tolist())
        changed += first != last
        # a drift replaces one interest at a time
        for a, b in zip(ui[:-1], ui[1:]):
            assert (a != b).sum() <= 1
    assert 0.4 < changed / len(gt["user_interests"]) < 0.9


def test_no_drift_when_disabled():
    d = make_planted(seed=1, n_users=200, p_drift=0.0)
    for ui in d.ground_truth["user_interests"]:
        assert (ui == ui[0]).all()


def test_many_categories_and_items_get_unique_names():
    d = make_planted(seed=5, n_users=20, n_categories=35, items_per_category=80)
    names = d.ground_truth["category_names"]
    assert len(set(names)) == 35
    assert any(re.search(r" \d+$", n) for n in names)
    assert len(set(d.titles)) == d.n_items == 2800


@pytest.mark.parametrize("kwargs", [
    {"items_per_category": 2},
    {"n_categories": 4},
    {"n_users": 0},
    {"p_noise": 1.5},
    {"min_interests": 5},
])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        make_planted(**kwargs)


def test_generation_is_fast():
    start = time.perf_counter()
    make_planted(seed=7)
    assert time.perf_counter() - start < 3.0  # typically ~0.03 s; loose for shared CPUs


def test_next_item_probabilities_are_a_distribution_that_never_rules_out_what_happened():
    """The oracle's P(next item) sums to 1 and gives every item the generator actually emitted a positive
    probability (a wrong chain memory or repeat rule would put some emitted items at 0 without noise)."""
    from dimerec.data.planted import next_item_probabilities

    for params in ({}, {"p_noise": 0.0}, {"p_noise": 0.0, "p_chain": 1.0, "p_drift": 0.2}):
        data = make_planted(seed=3, n_users=120, **params)
        for u in range(120):
            seq = data.sequences[u]
            for cut in range(1, len(seq)):
                probs = next_item_probabilities(data, u, cut)
                assert probs.min() >= 0 and abs(probs.sum() - 1) < 1e-9
                assert probs[seq[cut]] > 0, (params, u, cut)


def test_next_item_probabilities_are_one_where_the_world_is_deterministic():
    """One interest, no noise, no drift, always the +1 neighbour: after a category's first item every next item
    is certain, and the oracle must say so."""
    from dimerec.data.planted import next_item_probabilities

    data = make_planted(seed=4, n_users=50, min_interests=1, max_interests=1, p_noise=0.0, p_drift=0.0,
                        p_chain=1.0, p_next=1.0)
    certain = [next_item_probabilities(data, u, cut)[data.sequences[u][cut]]
               for u in range(50) for cut in range(1, len(data.sequences[u]))]
    assert np.allclose(certain, 1.0)


def test_the_oracle_ceiling_beats_popularity_and_matches_the_documented_difficulty():
    from dimerec.explore import oracle_reference, popularity_reference

    data = make_planted(seed=0)
    split = data.split(0)
    oracle = oracle_reference(data, split.test[:200])
    pop = popularity_reference(data, split.test[:200], split.train)
    assert oracle["HR@50"] > pop["HR@50"] + 0.5  # the module docstring: 0.83 against 0.23
    assert abs(oracle["HR@50"] - 0.83) < 0.03
    assert oracle_reference(data, split.test[:200], protocol="future") is None
