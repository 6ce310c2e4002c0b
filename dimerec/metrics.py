"""Ranking metrics from one top-N pass: pure functions of arrays, no model inside.

HR@N     1 if at least one target is in the top N.
Recall@N hits in the top N / number of targets.
NDCG@N   standard: DCG of the hits over the ideal DCG of min(|targets|, N) hits
         (not ComiRec's variant, which divides by an ideal over the hits only).
MRR@N    1 / rank (1-based) of the first target in the top N, 0 when none is there.

Beyond accuracy: aggregates over every row's top-N list (not means of per-row values), from the exposure
counts (how often each item is recommended) and the items' training popularity (interactions of the
training users, `SeqDataset.item_popularity`):
ItemCoverage@N       distinct items recommended / n_items.
Gini@N               Gini index of the exposure counts over all n_items items (never-recommended ones count
                     as 0): 0 when every item is recommended equally often, (n-1)/n when one item takes all.
AveragePopularity@N  mean training popularity (interaction count) over all recommended slots; with lists of
                     equal length this is RecBole's mean over users of each list's mean.
TailPercentage@N     share of recommended slots that hold a long-tail item: the long tail is every item
                     outside the head, the ceil(20% of n_items) items with the most training interactions
                     (ties by the lower id).

Ties in scores are broken by the lower item id (`topk_items` sorts stably).

A catalogue smaller than a cutoff N: the top-N list is the whole catalogue (its n_items items, fewer when seen items
are masked), so @N is @n_items there: HR@50 on 10 items is HR@10, and NDCG@N's ideal counts at most that many hits.
Every metric keeps its name and is defined for any catalogue of one or more items.
"""
from __future__ import annotations

import numpy as np
import torch

CUTOFFS = (10, 20, 50)
METRIC_KEYS = tuple(f"{m}@{n}" for m in ("HR", "Recall", "NDCG") for n in CUTOFFS)
MRR_KEYS = tuple(f"MRR@{n}" for n in CUTOFFS)
BEYOND_ACCURACY = ("ItemCoverage", "Gini", "AveragePopularity", "TailPercentage")
BEYOND_KEYS = tuple(f"{m}@{n}" for m in BEYOND_ACCURACY for n in CUTOFFS)
HEAD_SHARE = 0.2  # the head: this share of the items, the most popular in training; the rest is the long tail


def max_over_interests(user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
    """[B, K, d] x [n_items, d] -> [B, n_items]: an item's score is its best over the K interests. Items given per
    row, [B, C, d] (each row's candidates), -> [B, C]."""
    if item_vectors.dim() == 3:
        return torch.einsum("bkd,bcd->bkc", user_vectors, item_vectors).amax(dim=1)
    return torch.einsum("bkd,nd->bkn", user_vectors, item_vectors).amax(dim=1)


def mixture_over_samples(user_vectors: torch.Tensor, item_vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """[B, S, d] x [n_items, d] -> [B, n_items]: the S vectors as one predictive distribution (issue 16,
    hypothesis 2): score_i = log Σ_s softmax_i(scale·<x_s, e_i>), the log of the mixture of the S samples'
    softmax distributions over items (up to log S). With S = 1 it ranks as the one sample's inner products."""
    logits = scale * torch.einsum("bsd,nd->bsn", user_vectors, item_vectors)  # [B, S, n_items]
    return torch.logsumexp(logits - torch.logsumexp(logits, dim=-1, keepdim=True), dim=1)


def topk_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[B, n_items] -> [B, k] item ids by descending score; ties go to the lower id."""
    k = min(k, scores.shape[1])
    values, _ = torch.topk(scores, k, dim=1)
    kth = values[:, -1:]
    # Items strictly above the k-th score are certainly in; tied items share the
    # last slots in id order. A stable sort over the candidates does both; rows
    # without a tie at the boundary hold exactly k candidates.
    candidates = scores >= kth
    masked = torch.where(candidates, scores, torch.full_like(scores, -torch.inf))
    ties = candidates.sum(dim=1) > k
    top = torch.sort(torch.topk(masked, k, dim=1).indices, dim=1).values  # ids ascending
    top_scores = torch.gather(scores, 1, top)
    top = torch.gather(top, 1, torch.sort(top_scores, dim=1, descending=True, stable=True).indices)
    if ties.any():
        rows = ties.nonzero().squeeze(1)
        top[rows] = torch.sort(masked[rows], dim=1, descending=True, stable=True).indices[:, :k]
    return top


def pad_targets(targets: list[np.ndarray]) -> np.ndarray:
    """Lists of target ids -> [R, T] int64, deduplicated per row, padded with -1."""
    uniq = [np.unique(t) for t in targets]
    width = max((len(t) for t in uniq), default=1)
    out = np.full((len(uniq), max(width, 1)), -1, dtype=np.int64)
    for row, t in enumerate(uniq):
        out[row, :len(t)] = t
    return out


def list_hits(topk: np.ndarray, targets: np.ndarray, cutoffs) -> np.ndarray:
    """[R, width] bool: whether each slot of the ranked lists holds one of the row's targets. The lists are cut to
    max(cutoffs) slots; shorter ones (a catalogue of fewer items) are the whole list (module docstring)."""
    topk = np.asarray(topk)[:, :max(cutoffs)]
    targets = np.asarray(targets).reshape(len(topk), -1)
    return (topk[:, :, None] == targets[:, None, :]).any(axis=2) & (topk >= 0)


def ranking_metrics(topk: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """Per-row HR@N, Recall@N, NDCG@N (`rank_metrics`) and MRR@N (`reciprocal_ranks`), in that order, from one
    comparison of the lists with the targets (same arguments as `rank_metrics`)."""
    hits = list_hits(topk, targets, cutoffs)
    return {**accuracy_of_hits(hits, targets, cutoffs), **reciprocal_ranks_of_hits(hits, cutoffs)}


def rank_metrics(topk: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """Per-row metrics. topk: [R, max(cutoffs)] ranked item ids, or fewer columns when the catalogue holds fewer
    items (then @N is @width); targets: [R, T] ids, -1 = none (see `pad_targets`). Returns {"HR@N" | "Recall@N" |
    "NDCG@N": float array [R]}.
    """
    return accuracy_of_hits(list_hits(topk, targets, cutoffs), targets, cutoffs)


def accuracy_of_hits(hits: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """`rank_metrics` from the lists' hits [R, width] (`list_hits`) and the targets they were compared with."""
    targets = np.asarray(targets).reshape(len(hits), -1)
    n_targets = np.maximum((targets >= 0).sum(axis=1), 1)
    width = max(hits.shape[1], 1)
    discounts = 1.0 / np.log2(np.arange(2, width + 2))
    ideal_cum = np.cumsum(discounts)
    out = {}
    for n in cutoffs:
        h = hits[:, :n]
        n_hits = h.sum(axis=1)
        out[f"HR@{n}"] = (n_hits > 0).astype(float)
        out[f"Recall@{n}"] = n_hits / n_targets
        out[f"NDCG@{n}"] = ((h * discounts[:h.shape[1]]).sum(axis=1)
                            / ideal_cum[np.minimum(n_targets, min(n, width)) - 1])
    return {f"{m}@{n}": out[f"{m}@{n}"] for m in ("HR", "Recall", "NDCG") for n in cutoffs}


def mean_metrics(per_row: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) if len(v) else 0.0 for k, v in per_row.items()}


def reciprocal_ranks(topk: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """Per-row MRR@N (same arguments as `rank_metrics`): 1 / rank of the first target in the top N, else 0."""
    return reciprocal_ranks_of_hits(list_hits(topk, targets, cutoffs), cutoffs)


def reciprocal_ranks_of_hits(hits: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """`reciprocal_ranks` from the lists' hits [R, width] (`list_hits`)."""
    n_max = max(cutoffs)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, n_max + 1)  # 1-based rank; n_max + 1 = none
    return {f"MRR@{n}": np.where(first <= n, 1.0 / first, 0.0) for n in cutoffs}


def exposure_counts(topk: np.ndarray, n_items: int, cutoffs=CUTOFFS) -> dict[int, np.ndarray]:
    """{N: [n_items] int64}: how often each item appears in the rows' top N. Add the counts of several
    batches to aggregate them; ids < 0 (a retriever's "none") are left out."""
    topk = np.asarray(topk)
    out = {}
    for n in cutoffs:
        ids = topk[:, :n].ravel()
        out[n] = np.bincount(ids[ids >= 0], minlength=n_items)
    return out


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts: sum_i (2i - n - 1) x_(i) / (n sum x), x sorted ascending, i = 1..n."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def long_tail(popularity: np.ndarray, head_share: float = HEAD_SHARE) -> np.ndarray:
    """[n_items] bool: True for long-tail items, i.e. outside the ceil(head_share * n_items) items with the
    most training interactions (ties broken by the lower id)."""
    popularity = np.asarray(popularity)
    head = np.argsort(-popularity, kind="stable")[:int(np.ceil(head_share * len(popularity)))]
    tail = np.ones(len(popularity), dtype=bool)
    tail[head] = False
    return tail


def beyond_accuracy(exposure: dict[int, np.ndarray], popularity: np.ndarray) -> dict[str, float]:
    """ItemCoverage@N, Gini@N, AveragePopularity@N and TailPercentage@N (module docstring) from the
    aggregated `exposure_counts` and the items' training popularity [n_items]."""
    popularity = np.asarray(popularity, dtype=np.float64)
    tail = long_tail(popularity)
    out = {}
    for n, counts in exposure.items():
        slots = counts.sum()
        out[f"ItemCoverage@{n}"] = float((counts > 0).sum() / len(counts))
        out[f"Gini@{n}"] = gini(counts)
        out[f"AveragePopularity@{n}"] = float((counts * popularity).sum() / slots) if slots else 0.0
        out[f"TailPercentage@{n}"] = float(counts[tail].sum() / slots) if slots else 0.0
    return {f"{m}@{n}": out[f"{m}@{n}"] for m in BEYOND_ACCURACY for n in exposure}
