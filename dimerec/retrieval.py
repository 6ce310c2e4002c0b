"""Top-N retrieval by maximum inner product over a user's K vectors.

Two interchangeable retrievers: `TorchRetriever` (dense scores + topk) and
`FaissRetriever` (an exact inner-product index, `faiss.IndexFlatIP`, as a
production ANN service would hold). For K interests, faiss returns each
interest's top candidates; an item's score is its best over the interests, so the
top-N of the union is exactly the top-N of the max-over-interests scores.
Both break ties by the lower item id.
"""
from __future__ import annotations

import numpy as np
import torch

from dimerec.metrics import max_over_interests, mixture_over_samples, topk_items


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

    def search(self, user_vectors, k, exclude=None):
        if self.merge == "mixture":
            scores = mixture_over_samples(user_vectors.float(), self.items, self.scale)  # [B, n_items]
        else:
            scores = max_over_interests(user_vectors.float(), self.items)  # [B, n_items]
        if exclude is not None:
            rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
            cols = np.concatenate(exclude) if len(rows) else np.zeros(0, np.int64)
            seen_rows = torch.from_numpy(rows).to(scores.device)
            seen_cols = torch.from_numpy(cols.astype(np.int64)).to(scores.device)
            scores[seen_rows, seen_cols] = -torch.inf
        return topk_items(scores, k)


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
        if exclude is not None:
            ex_rows = np.repeat(np.arange(B), [len(e) for e in exclude])
            ex_cols = np.concatenate(exclude).astype(np.int64) if len(ex_rows) else np.zeros(0, np.int64)
            dense[torch.from_numpy(ex_rows), torch.from_numpy(ex_cols)] = -torch.inf
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


RETRIEVERS = {"torch": TorchRetriever, "faiss": FaissRetriever}
