"""The approximate faiss retrievers (IVF, HNSW) against exact search, their masking and their parameters."""
import json

import numpy as np
import pytest
import torch

from dimerec.errors import DimeRecError
from dimerec.retrieval import (FaissHNSWRetriever, FaissIVFRetriever, FaissRetriever, TorchRetriever, make_retriever,
                               mask_seen, merge_candidates)


def random_world(n_items=600, d=16, B=30, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_items, d, generator=g), torch.randn(B, K, d, generator=g)


def exact(items, users, k, exclude=None):
    r = TorchRetriever()
    r.index(items)
    return r.search(users, k, exclude)


@pytest.mark.parametrize("name, params", [("faiss-ivf", "nlist=12,nprobe=12"), ("faiss-hnsw", "efSearch=600")])
def test_exhaustive_settings_return_the_exact_top_k(name, params):
    items, users = random_world()
    r = make_retriever(name, params)
    r.index(items)
    for k in (1, 50):
        np.testing.assert_array_equal(r.search(users, k).numpy(), exact(items, users, k).numpy())


@pytest.mark.parametrize("name, params", [("faiss-ivf", "nlist=12,nprobe=12"), ("faiss-hnsw", "efSearch=600"),
                                          ("faiss-ivf", "nlist=12,nprobe=1"), ("faiss-hnsw", "M=4,efSearch=8")])
def test_masking_excludes_seen_items(name, params):
    items, users = random_world()
    rng = np.random.default_rng(0)
    # the best items of each row are the ones excluded, so masking must act before the cut
    best = exact(items, users, 40).numpy()
    exclude = [rng.choice(best[b], size=rng.integers(0, 40), replace=False) for b in range(len(users))]
    exclude[0] = np.arange(0, 600, 2)  # half the catalogue
    r = make_retriever(name, params)
    r.index(items)
    top = r.search(users, 50, exclude).numpy()
    assert top.shape == (30, 50)
    for row, ex in zip(top, exclude):
        assert len(set(row.tolist())) == 50 and not set(row.tolist()) & set(ex.tolist())
        assert row.min() >= 0
    if params.endswith(("nprobe=12", "efSearch=600")):  # exhaustive: the exact masked lists
        np.testing.assert_array_equal(top, exact(items, users, 50, exclude).numpy())


def test_few_cells_probed_still_fill_every_row():
    # 200 cells of ~3 items, one probed: far fewer than k candidates; such rows are filled by exact search
    items, users = random_world()
    r = FaissIVFRetriever(nlist=200, nprobe=1)
    r.index(items)
    top = r.search(users, 50).numpy()
    assert all(len(set(row.tolist())) == 50 for row in top) and top.min() >= 0


def test_the_index_is_built_once_per_index_call(monkeypatch):
    items, users = random_world()
    r = FaissHNSWRetriever()
    builds = []
    build = r.build
    monkeypatch.setattr(r, "build", lambda x: builds.append(1) or build(x))
    r.index(items)
    for _ in range(3):
        r.search(users, 10)
    assert builds == [1]


def test_one_masking_for_dense_scores_and_candidate_lists():
    scores = torch.arange(12.0).view(2, 6)
    mask_seen(scores, [np.array([1, 5]), np.array([], dtype=np.int64)])
    assert torch.isinf(scores).nonzero().tolist() == [[0, 1], [0, 5]]
    ids = torch.tensor([[5, 2, -1], [5, 1, 0]])
    cand = torch.ones(2, 3)
    mask_seen(cand, [np.array([5]), np.array([0, 9])], ids=ids)
    assert torch.isinf(cand).nonzero().tolist() == [[0, 0], [1, 2]]
    mask_seen(cand, None, ids=ids)  # nothing to exclude: unchanged


def test_merge_keeps_each_items_best_score_and_breaks_ties_by_lower_id():
    ids = torch.tensor([[7, 3, 7, 1, -1, 3]])
    scores = torch.tensor([[0.5, 0.9, 0.95, 0.9, 2.0, 0.1]])
    top, top_scores = merge_candidates(ids, scores, 3)
    assert top.tolist() == [[7, 1, 3]] and torch.equal(top_scores, scores[:, [2, 3, 1]])


def test_torch_retriever_chunks_large_searches_identically(monkeypatch):
    import dimerec.retrieval as retrieval

    items, users = random_world()
    whole = exact(items, users, 50, [np.array([0, 1])] * 30)
    monkeypatch.setattr(retrieval, "CHUNK_SCORES", 4 * 600 * 7)  # 7 rows a chunk
    np.testing.assert_array_equal(exact(items, users, 50, [np.array([0, 1])] * 30).numpy(), whole.numpy())


@pytest.mark.parametrize("name, params, message", [
    ("faiss-ivf", "nprobe=0", "nprobe must be a positive integer"),
    ("faiss-ivf", "nlist=8,nprobe=9", r"nprobe \(9\) cannot exceed nlist \(8\)"),
    ("faiss-ivf", "efSearch=10", "faiss-ivf takes nlist, nprobe; got efSearch"),
    ("faiss-hnsw", "M=1", "M must be at least 2; got 1"),
    ("faiss-hnsw", "M=32,efSearch", "KEY=INTEGER"),
    ("faiss-hnsw", "M=big", "KEY=INTEGER"),
    ("faiss", "nprobe=4", "exact and takes no parameters"),
    ("annoy", None, "--retriever must be one of torch, faiss, faiss-ivf, faiss-hnsw"),
])
def test_bad_parameters_are_one_line_errors(name, params, message):
    with pytest.raises(DimeRecError, match=message) as err:
        make_retriever(name, params)
    assert "\n" not in str(err.value)


def test_nlist_above_the_catalogue_is_an_error_at_index_time():
    r = make_retriever("faiss-ivf", "nlist=1000")
    with pytest.raises(DimeRecError, match=r"nlist \(1000\) cannot exceed the 600 items"):
        r.index(random_world()[0])


def test_exact_retrievers_still_agree_after_the_shared_masking():
    items, users = random_world(seed=3)
    exclude = [np.random.default_rng(b).choice(600, 30, replace=False) for b in range(30)]
    f = FaissRetriever()
    f.index(items)
    np.testing.assert_array_equal(f.search(users, 50, exclude).numpy(), exact(items, users, 50, exclude).numpy())


# ---- through the command line ---------------------------------------------------------------------

def test_cli_trains_and_evaluates_with_an_approximate_retriever(tmp_path, capsys):
    from dimerec.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "comirec-sa", "--dataset", "planted", "--max-steps", "5", "--dim", "16",
                 "--quiet", "--out", str(run), "--retriever", "faiss-ivf",
                 "--retriever-params", "nlist=20,nprobe=20"]) == 0
    config = json.loads((run / "config.json").read_text())["train_config"]
    assert (config["retriever"], config["retriever_params"]) == ("faiss-ivf", "nlist=20,nprobe=20")
    trained = json.loads((run / "metrics.json").read_text())
    # every cell probed: exact search, so the same metrics as the exact torch retriever
    assert main(["evaluate", str(run), "--retriever", "torch"]) == 0
    assert json.loads((run / "metrics.json").read_text())["test"] == trained["test"]
    capsys.readouterr()
    assert main(["train", "--model", "comirec-sa", "--dataset", "planted", "--out", str(tmp_path / "bad"),
                 "--retriever", "faiss-hnsw", "--retriever-params", "nprobe=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --retriever faiss-hnsw takes M, efConstruction, efSearch; got nprobe"
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("protocol", ["next-item", "future"])
def test_evaluate_with_default_ivf_on_a_small_catalogue_is_exact(trained_sa, planted_small, protocol):
    # 480 items: the default nlist is 480 // 39 = 12 cells and nprobe (64) is capped at 12, i.e. every cell
    from dimerec.evaluate import evaluate

    model, users = trained_sa[0], planted_small.split(0).valid
    for mask in (False, True):
        assert (evaluate(model, planted_small, users, protocol, mask_seen=mask, retriever=make_retriever("faiss-ivf"))
                == evaluate(model, planted_small, users, protocol, mask_seen=mask, retriever=TorchRetriever()))
