"""Top-N retrieval by maximum inner product over a user's K vectors.

Exact retrievers: `TorchRetriever` (dense scores + topk, in row chunks that bound memory) and
`FaissRetriever` (an exact inner-product index, `faiss.IndexFlatIP`, as a production ANN service would
hold); both return the same lists and break ties by the lower item id.

Approximate retrievers, for catalogues where exact search is too slow: `FaissIVFRetriever`
(`faiss.IndexIVFFlat`: k-means cells, `nprobe` of `nlist` cells scanned) and `FaissHNSWRetriever`
(`faiss.IndexHNSWFlat`: a graph with `M` links per item, `efSearch` candidates kept while searching).
Each interest's top candidates are merged by their best score over the interests; ties among the
candidates go to the lower id. With nprobe = nlist, IVF is exhaustive and returns the exact lists.
A row with fewer than k unmasked candidates (IVF with few cells probed) is filled by exact search.

For K interests, faiss returns each interest's top candidates; an item's score is its best over the
interests, so the top-N of the union is exactly the top-N of the max-over-interests scores.
`mask_seen` is the one implementation of seen-item masking, for dense scores and for candidate lists.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from dimerec.errors import DimeRecError
from dimerec.metrics import max_over_interests, mixture_over_samples, topk_items

CHUNK_SCORES = 1 << 25  # TorchRetriever scores at most this many (row, interest, item) triples at once (128 MiB)


def mask_seen(scores: torch.Tensor, exclude: list[np.ndarray] | None, ids: torch.Tensor | None = None) -> None:
    """In place: the scores of the items in `exclude[b]` become -inf in row b.

    scores: [B, n_items] dense scores (column j is item j), or [B, C] candidate scores whose item ids are
    `ids` [B, C]. Does nothing when `exclude` is None.
    """
    if exclude is None:
        return
    rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
    if not len(rows):
        return
    cols = torch.from_numpy(np.concatenate(exclude).astype(np.int64)).to(scores.device)
    rows = torch.from_numpy(rows).to(scores.device)
    if ids is None:
        scores[rows, cols] = -torch.inf
        return
    width = int(max(cols.max().item(), ids.max().item())) + 1
    seen = torch.unique(rows * width + cols)  # sorted keys of the (row, item) pairs to remove
    keys = torch.arange(len(ids), device=ids.device)[:, None] * width + ids.clamp_min(0)
    pos = torch.searchsorted(seen, keys).clamp_max(len(seen) - 1)
    scores[(seen[pos] == keys) & (ids >= 0)] = -torch.inf


class Retriever:
    def index(self, item_vectors: torch.Tensor) -> None:
        raise NotImplementedError

    def search(self, user_vectors: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None) -> torch.Tensor:
        """[B, K, d] -> [B, k] item ids; items in `exclude[b]` are never returned for row b."""
        raise NotImplementedError


class TorchRetriever(Retriever):
    """Dense scores, then topk. `merge`: how the K vectors make an item's score — "max" (the contract's best
    inner product) or "mixture" (metrics.mixture_over_samples at `scale`, which only dense scoring offers)."""

    merge, scale = "max", 1.0  # class defaults, for subclasses that do not call __init__

    def __init__(self, merge: str = "max", scale: float = 1.0):
        if merge not in ("max", "mixture"):
            raise ValueError(f"merge must be max or mixture, got {merge!r}")
        self.merge, self.scale = merge, scale

    def index(self, item_vectors: torch.Tensor) -> None:
        self.items = item_vectors.detach().float()

    def scores(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """[B, K, d] -> [B, n_items]: every item's score, the K vectors merged by `merge`."""
        vectors = user_vectors.float()
        return (mixture_over_samples(vectors, self.items, self.scale) if self.merge == "mixture"
                else max_over_interests(vectors, self.items))

    def search(self, user_vectors, k, exclude=None):
        B, K = user_vectors.shape[:2]
        step = max(1, CHUNK_SCORES // max(1, K * len(self.items)))
        parts = []
        for start in range(0, max(B, 1), step):
            scores = self.scores(user_vectors[start:start + step])  # [b, n_items]
            mask_seen(scores, exclude[start:start + step] if exclude is not None else None)
            parts.append(topk_items(scores, k))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class FaissRetriever(Retriever):
    def index(self, item_vectors: torch.Tensor) -> None:
        import faiss

        items = np.ascontiguousarray(item_vectors.detach().float().cpu().numpy())
        self.n_items = items.shape[0]
        self.faiss_index = faiss.IndexFlatIP(items.shape[1])
        self.faiss_index.add(items)
        self.exact = TorchRetriever()  # for rows whose k-th score ties beyond faiss's depth
        self.exact.index(item_vectors.cpu())  # faiss's side of the search is on the CPU

    def search(self, user_vectors, k, exclude=None):
        B, K, d = user_vectors.shape
        n_excluded = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        depth = min(self.n_items, k + n_excluded + 1)  # +1 sees whether the k-th score is tied below
        queries = np.ascontiguousarray(user_vectors.detach().float().reshape(B * K, d).cpu().numpy())
        scores, ids = self.faiss_index.search(queries, depth)  # [B*K, depth]
        # Merge the K lists: a [B, n_items] score matrix holding each candidate's best score.
        rows = torch.arange(B).repeat_interleave(K * depth)
        cand = torch.from_numpy(ids.reshape(-1)).long()
        vals = torch.from_numpy(scores.reshape(-1))
        valid = cand >= 0
        dense = torch.full((B * self.n_items,), -torch.inf).scatter_reduce(
            0, rows[valid] * self.n_items + cand[valid], vals[valid], reduce="amax").view(B, self.n_items)
        mask_seen(dense, exclude)
        top = topk_items(dense, k)
        if depth < self.n_items:
            # An item no interest returned scores at most that interest's last returned score. Where that
            # reaches the row's k-th score, faiss may have kept a tied item over a lower id it left out:
            # such rows are scored densely so that ties go to the lower id, as in TorchRetriever.
            kth = torch.gather(dense, 1, top[:, -1:]).squeeze(1)
            last = torch.from_numpy(scores[:, -1].copy()).view(B, K).amax(dim=1)
            tied = (last >= kth).nonzero().squeeze(1)
            if len(tied):
                sub_exclude = [exclude[i] for i in tied.tolist()] if exclude is not None else None
                top[tied] = self.exact.search(user_vectors[tied].cpu(), k, exclude=sub_exclude)
        return top


def merge_candidates(ids: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate lists [B, C] (an item may appear once per interest; id -1 = none) -> the top k distinct
    items of each row by their best score, ties to the lower id: ([B, k] ids, [B, k] scores)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ids, scores = ids.gather(1, order), scores.gather(1, order)
    order = torch.argsort(ids, dim=1, stable=True)  # by id; each id's best score first
    ids, scores = ids.gather(1, order), scores.gather(1, order)
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    scores = scores.masked_fill(repeat | (ids < 0), -torch.inf)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]  # ids ascending within a tie
    return ids.gather(1, order), scores.gather(1, order)


class ApproximateFaissRetriever(Retriever):
    """Shared by the IVF and HNSW retrievers: parameter checks, the K-interest merge, masking, fallback."""
    name = ""
    defaults: dict[str, int | None] = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise DimeRecError(f"--retriever {self.name} takes {', '.join(self.defaults)}; got {', '.join(unknown)}")
        for key, value in params.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DimeRecError(f"--retriever {self.name}: {key} must be a positive integer; got {value!r}")
        self.params = {**self.defaults, **params}

    def build(self, items: np.ndarray):
        raise NotImplementedError

    def set_search_params(self, depth: int) -> None:
        """Apply the search-time parameters (read at every search, so they can change without a rebuild)."""
        raise NotImplementedError

    def index(self, item_vectors: torch.Tensor) -> None:
        items = np.ascontiguousarray(item_vectors.detach().float().cpu().numpy())
        self.n_items = items.shape[0]
        self.faiss_index = self.build(items)
        self.exact = TorchRetriever()  # fills the rare rows with fewer than k candidates
        self.exact.index(item_vectors.detach().cpu())

    def search(self, user_vectors, k, exclude=None):
        B, K, d = user_vectors.shape
        k = min(k, self.n_items)
        n_excluded = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        depth = min(self.n_items, k + n_excluded)  # each interest alone then holds k unmasked candidates
        queries = np.ascontiguousarray(user_vectors.detach().float().reshape(B * K, d).cpu().numpy())
        self.set_search_params(depth)
        scores, ids = self.faiss_index.search(queries, depth)  # [B*K, depth]
        ids = torch.from_numpy(ids).long().view(B, K * depth)
        scores = torch.from_numpy(scores).view(B, K * depth)
        mask_seen(scores, exclude, ids=ids)
        top, top_scores = merge_candidates(ids, scores, k)
        short = (~torch.isfinite(top_scores[:, -1])).nonzero().squeeze(1)
        if len(short):
            sub_exclude = [exclude[i] for i in short.tolist()] if exclude is not None else None
            top[short] = self.exact.search(user_vectors[short].detach().cpu(), k, exclude=sub_exclude)
        return top


class FaissIVFRetriever(ApproximateFaissRetriever):
    """faiss.IndexIVFFlat over inner products. nlist: k-means cells (default 4·sqrt(n_items), at most
    n_items / 39 so that k-means has 39 items a cell); nprobe: cells scanned per interest (default 64, at
    most nlist)."""
    name = "faiss-ivf"
    defaults = {"nlist": None, "nprobe": 64}

    def __init__(self, **params):
        super().__init__(**params)
        nlist, nprobe = self.params["nlist"], self.params["nprobe"]
        if nlist is not None and "nprobe" in params and nprobe > nlist:
            raise DimeRecError(f"--retriever faiss-ivf: nprobe ({nprobe}) cannot exceed nlist ({nlist})")

    def build(self, items):
        import faiss

        n, d = items.shape
        nlist = self.params["nlist"] or max(1, min(round(4 * math.sqrt(n)), n // 39))
        if nlist > n:
            raise DimeRecError(f"--retriever faiss-ivf: nlist ({nlist}) cannot exceed the {n} items")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # no warning for small cells; the default nlist keeps them >= 39
        index.cp.max_points_per_centroid = 64  # k-means on a sample of 64 items a cell (faiss: 256): 4x faster
        index.train(items)
        index.add(items)
        self.nlist = nlist
        return index

    def set_search_params(self, depth):
        self.faiss_index.nprobe = min(self.params["nprobe"], self.nlist)


class FaissHNSWRetriever(ApproximateFaissRetriever):
    """faiss.IndexHNSWFlat over inner products. M: graph links per item (default 32); efConstruction:
    candidates kept while building (default 80); efSearch: candidates kept while searching (default 256,
    raised to the search depth when smaller; 128 reached recall@50 0.984 on 10^6 clustered items, 256
    0.998: results/bench.json)."""
    name = "faiss-hnsw"
    defaults = {"M": 32, "efConstruction": 80, "efSearch": 256}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["M"] < 2:  # faiss 1.15 crashes (segmentation fault) building a graph with M = 1
            raise DimeRecError(f"--retriever faiss-hnsw: M must be at least 2; got {self.params['M']}")

    def build(self, items):
        import faiss

        index = faiss.IndexHNSWFlat(items.shape[1], self.params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.params["efConstruction"]
        index.add(items)
        return index

    def set_search_params(self, depth):
        self.faiss_index.hnsw.efSearch = max(self.params["efSearch"], depth)  # else fewer than depth come back


RetrieverKind = Literal["torch", "faiss", "faiss-ivf", "faiss-hnsw"]  # the names of RETRIEVERS, as the flag's type
RETRIEVERS = {"torch": TorchRetriever, "faiss": FaissRetriever, "faiss-ivf": FaissIVFRetriever,
              "faiss-hnsw": FaissHNSWRetriever}


def parse_params(text: str | dict | None) -> dict:
    """"nlist=1024,nprobe=32" (or a dict) -> {"nlist": 1024, "nprobe": 32}."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    params = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            params[key.strip()] = int(value)
        except ValueError:
            raise DimeRecError(f"--retriever-params takes KEY=INTEGER pairs separated by commas "
                               f"(e.g. nlist=1024,nprobe=64); got {part!r}") from None
    return params


def make_retriever(name: str, params: str | dict | None = None) -> Retriever:
    """The retriever `name` of RETRIEVERS with its parameters ("nlist=1024,nprobe=64", "M=32,efSearch=256")."""
    if name not in RETRIEVERS:
        raise DimeRecError(f"--retriever must be one of {', '.join(RETRIEVERS)}; got {name!r}")
    params = parse_params(params)
    cls = RETRIEVERS[name]
    if not issubclass(cls, ApproximateFaissRetriever):
        if params:
            raise DimeRecError(f"--retriever {name} is exact and takes no parameters; got {', '.join(params)}")
        return cls()
    return cls(**params)
