"""Table 2 read-outs (dimerec.analysis): the linear probe separates embeddings that encode the category from
random ones, labels take the first listed category, and category diversity counts what retrieval returns."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from dimerec.analysis import category_diversity, linear_probe, probe_labels
from dimerec.data import load_dataset
from dimerec.data.dataset import SeqDataset
from dimerec.evaluate import build_rows
from dimerec.models.base import Recommender
from dimerec.models.comirec_sa import ComiRecSA
from dimerec.models.pop import MostPopular


@pytest.fixture(scope="module")
def planted():
    return load_dataset("planted")


def tiny_dataset() -> SeqDataset:
    """8 items with multi-genre, single-genre and missing categories; "Rare" has one item."""
    categories = [["Comedy", "Drama"], ["Drama"], [], ["Action", "Comedy"], ["Drama", "Action"],
                  ["Comedy"], ["Rare"], ["Action"]] + [["Drama"]] * 4 + [["Comedy"]] * 3 + [["Action"]] * 3
    sequences = [np.array(s, dtype=np.int64) for s in
                 ([0, 1, 3, 4], [0, 3, 5, 0, 3], [0, 6, 2], [7, 0, 3, 1], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17])]
    return SeqDataset(name="tiny", sequences=sequences, n_items=len(categories), max_len=3,
                      item_categories=categories)


class CategoryPointer(Recommender):
    """Items are one-hot categories; the user's interests point at the categories of the last `n_last` items."""

    def __init__(self, item_category: np.ndarray, n_categories: int, pad_id: int, n_last: int = 1):
        super().__init__(len(item_category), 0, None)
        assert pad_id == self.pad_id  # the contract's: the item after the last
        self.table = torch.eye(n_categories)[torch.from_numpy(item_category)]  # [n_items, C]
        self.n_last = n_last

    def item_vectors(self):
        return self.table

    def user_vectors(self, hist):
        last = hist[:, -self.n_last:]  # [B, n_last]; planted histories in evaluation rows are never empty
        return torch.where((last != self.pad_id)[:, :, None], self.table[last.clamp(max=self.pad_id - 1)], 0.0)


class RandomRecommender(Recommender):
    """Fixed random item table; a user is the random vector of the last item."""

    def __init__(self, n_items: int, dim: int = 16, seed: int = 0):
        super().__init__(n_items, 0, None)
        self.emb = nn.Embedding(n_items + 1, dim)
        nn.init.normal_(self.emb.weight, generator=torch.Generator().manual_seed(seed))

    def item_vectors(self):
        return self.emb.weight[:self.n_items]

    def user_vectors(self, hist):
        return self.emb(hist[:, -1:])  # [B, 1, d]


# ---- probe labels ------------------------------------------------------------------------------

def test_probe_labels_take_the_first_genre_skip_empty_and_drop_rare_classes():
    ids, labels, description = probe_labels(tiny_dataset())
    # item 2 has no genre, item 6's class "Rare" has one item (< 5): both out
    assert ids.tolist() == [0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert labels.tolist() == ["Comedy", "Drama", "Action", "Drama", "Comedy", "Action"] + ["Drama"] * 4 \
        + ["Comedy"] * 3 + ["Action"] * 3
    assert "first listed" in description and "3 classes" in description
    assert "1 items with no category skipped" in description and "1 class with fewer than 5" in description
    # item 4 lists Drama before Action, so the lists are not all alphabetical: no such claim is made
    assert "alphabetical" not in description


def test_probe_labels_on_planted_are_the_planted_categories(planted):
    ids, labels, description = probe_labels(planted)
    names = np.array(planted.ground_truth["category_names"])
    assert ids.tolist() == list(range(planted.n_items))
    assert (labels == names[planted.ground_truth["item_category"]]).all()
    assert description.startswith("first listed category; 12 classes; 0 items with no category skipped")


def test_probe_and_diversity_need_categories(planted):
    no_categories = SeqDataset(name="none", sequences=[np.array([0, 1])], n_items=2, max_len=2)
    with pytest.raises(Exception, match="no categories"):
        probe_labels(no_categories)
    with pytest.raises(ValueError, match="n_items"):
        linear_probe(np.zeros((planted.n_items - 1, 4)), planted)


# ---- linear probe ------------------------------------------------------------------------------

def test_probe_reads_category_embeddings_and_not_random_ones(planted):
    rng = np.random.default_rng(0)
    category = planted.ground_truth["item_category"]
    centroids = rng.normal(size=(12, 16))
    encoded = linear_probe(centroids[category] + 0.3 * rng.normal(size=(planted.n_items, 16)), planted)
    random = linear_probe(torch.randn(planted.n_items, 16, generator=torch.Generator().manual_seed(0)), planted)
    assert encoded["majority_accuracy"] == pytest.approx(1 / 12)  # 40 items in each of 12 categories
    assert (encoded["n_items"], encoded["n_classes"], encoded["folds"]) == (480, 12, 5)
    assert encoded["accuracy"] > 0.95 and encoded["macro_f1"] > 0.95
    assert random["accuracy"] < random["majority_accuracy"] + 0.06
    assert random["macro_f1"] < 0.15
    assert len(encoded["fold_accuracy"]) == 5
    assert encoded["accuracy"] == pytest.approx(np.mean(encoded["fold_accuracy"]))


def test_probe_is_deterministic_for_a_seed(planted):
    x = np.random.default_rng(1).normal(size=(planted.n_items, 8))
    assert linear_probe(x, planted, seed=3) == linear_probe(x, planted, seed=3)
    assert linear_probe(x, planted, seed=3)["fold_accuracy"] != linear_probe(x, planted, seed=4)["fold_accuracy"]


# ---- category diversity ------------------------------------------------------------------------

def test_most_popular_diversity_is_the_categories_of_the_100_most_popular_items(planted):
    split = planted.split(0)
    pop = MostPopular(planted.n_items, planted.max_len, MostPopular.Config())
    pop.fit_statistics(planted, split.train)  # what train() does for this model
    counts = planted.item_popularity(split.train)
    top100 = np.argsort(-counts, kind="stable")[:100]  # ties to the lower id, as retrieval breaks them
    expected = len({planted.item_categories[i][0] for i in top100})
    result = category_diversity(pop, planted, split.test)
    assert result["mean"] == expected and result["std"] == 0.0
    assert result["rows"] == len(build_rows(planted, split.test, "next-item").hist)
    assert (result["k"], result["protocol"], result["n_categories"]) == (100, "next-item", 12)
    future = category_diversity(pop, planted, split.test, protocol="future")
    assert future["rows"] == len(split.test) and future["mean"] == expected
    assert category_diversity(pop, planted, split.test, max_rows=50)["rows"] == 50


def test_multi_category_items_count_every_category():
    data = tiny_dataset()
    pop = MostPopular(data.n_items, data.max_len, MostPopular.Config())
    pop.fit_statistics(data, np.array([0, 1, 2]))  # counts: item 0 x4, item 3 x3, items 1, 4, 5, 6, 2 once
    result = category_diversity(pop, data, np.array([3]), k=2)  # top-2 = items 0 (Comedy, Drama), 3 (Action, Comedy)
    assert result["mean"] == 3 and result["rows"] == 3
    assert "contributes all" in result["counting"]
    # top-4 adds item 1 (Drama) and item 2 (no category): still 3
    assert category_diversity(pop, data, np.array([3]), k=4)["mean"] == 3


def test_interests_pointing_at_categories_retrieve_only_those(planted):
    users = planted.split(0).test
    category = planted.ground_truth["item_category"]
    single = category_diversity(CategoryPointer(category, 12, planted.pad_id), planted, users, k=40)
    assert single["mean"] == 1.0 and single["std"] == 0.0  # a category holds exactly 40 items
    three = CategoryPointer(category, 12, planted.pad_id, n_last=3)
    assert 1.0 < category_diversity(three, planted, users, k=40)["mean"] <= 3.0
    random = category_diversity(RandomRecommender(planted.n_items), planted, users)
    assert random["mean"] > 10  # 100 of 480 items in random directions reach most of the 12 categories


def test_diversity_restores_the_training_mode_and_leaves_the_random_state(planted):
    model = RandomRecommender(planted.n_items).train()
    state = torch.get_rng_state()
    category_diversity(model, planted, planted.split(0).test[:5])
    assert model.training and torch.equal(state, torch.get_rng_state())
    model.eval()
    category_diversity(model, planted, planted.split(0).test[:5])
    assert not model.training


def test_trained_comirec_sa_probes_its_categories_and_retrieves_fewer_of_them(trained_sa, planted_small):
    model, metrics, _ = trained_sa
    assert metrics["steps"] >= 24  # a few dozen steps of the real trainer
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = ComiRecSA(planted_small.n_items, planted_small.max_len, ComiRecSA.Config())
    users = planted_small.split(0).test
    trained_div = category_diversity(model, planted_small, users)
    untrained_div = category_diversity(untrained, planted_small, users)
    # a user holds 2-4 interests of 40 items each: a trained model's top-100 stays near them
    assert trained_div["mean"] < untrained_div["mean"] - 2
    probe = linear_probe(model.item_vectors(), planted_small)
    assert probe["accuracy"] > probe["majority_accuracy"] + 0.5
    assert linear_probe(untrained.item_vectors(), planted_small)["accuracy"] < probe["majority_accuracy"] + 0.06
