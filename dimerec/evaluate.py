"""Full-ranking evaluation under both protocols of SPEC §2.

- `next-item` (default; DreamRec's data and code): every prefix of a held-out
  sequence predicts the item that follows it; one target per row.
- `future` (ComiRec's code): the first 80% of a held-out sequence is the history
  and the remaining 20% are all targets.
- `loo` (RecBole's leave-one-out): every user trains on all but the last two items,
  validates on the second-to-last and is tested on the last. Here one row per user
  predicting the last item of the sequences it is given; `trainer.protocol_data` hands
  it the sequences without their last item for validation, and whole for test.

One top-50 pass gives HR, Recall, NDCG and MRR at 10, 20 and 50, and, given the items' training
popularity, the beyond-accuracy aggregates ItemCoverage, Gini, AveragePopularity and TailPercentage
at the same cutoffs (dimerec.metrics).
Masking already-seen items is an option, off by default as in the paper.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from dimerec.data.dataset import SeqDataset, left_pad
from dimerec.errors import DimeRecError
from dimerec.metrics import (CUTOFFS, beyond_accuracy, exposure_counts, max_over_interests, mean_metrics, pad_targets,
                             rank_metrics, ranking_metrics)
from dimerec.retrieval import Retriever
from dimerec.serving import DEFAULT, ServeConfig, ranking, trajectory, user_vectors

Protocol = Literal["next-item", "future", "loo"]
PROTOCOLS = ("next-item", "future", "loo")


@dataclass
class EvalRows:
    """What one protocol asks of one user split: histories, targets, and what each row has seen."""
    hist: np.ndarray  # [R, L] left-padded
    targets: np.ndarray  # [R, T] target ids, -1 padded
    user: np.ndarray  # [R] user index
    cut: np.ndarray  # [R] number of items before the row's history ends (seen = seq[:cut])


def build_rows(data: SeqDataset, users: np.ndarray, protocol: Protocol, *, last_only: bool = False) -> EvalRows:
    """The evaluation rows of `users` (in their order; users with fewer than 2 items have none).

    last_only=True keeps one row per user, the last: under next-item the history before the user's final
    item, predicting it (what a recommender serves "now"); under future every user has one row already.
    loo is next-item with last_only.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "loo":
        protocol, last_only = "next-item", True
    L, pad = data.max_len, data.pad_id
    hists, targets, row_user, cuts = [], [], [], []
    for u in users:
        seq = data.sequences[u]
        n = len(seq)
        if n < 2:
            continue
        if protocol == "next-item":
            first = n - 1 if last_only else 1  # the first target position kept
            padded = np.concatenate([np.full(L, pad, dtype=np.int64), seq])
            windows = sliding_window_view(padded, L)[first:n]  # window k ends just before seq[k]
            hists.append(windows)
            targets.append(seq[first:, None])
            row_user.append(np.full(n - first, u))
            cuts.append(np.arange(first, n))
        else:
            cut = min(max(1, int(n * 0.8)), n - 1)
            hists.append(left_pad([seq[max(0, cut - L):cut]], L, pad))
            targets.append(pad_targets([seq[cut:]]))
            row_user.append([u])
            cuts.append([cut])
    width = max((t.shape[1] for t in targets), default=1)
    targets = [np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=-1) for t in targets]
    return EvalRows(
        hist=np.concatenate(hists).astype(np.int64) if hists else np.zeros((0, L), np.int64),
        targets=np.concatenate(targets) if targets else np.zeros((0, 1), np.int64),
        user=np.concatenate(row_user).astype(np.int64) if row_user else np.zeros(0, np.int64),
        cut=np.concatenate(cuts).astype(np.int64) if cuts else np.zeros(0, np.int64),
    )


def seen_items(data: SeqDataset, rows: EvalRows, index: np.ndarray) -> list[np.ndarray]:
    return [data.sequences[u][:c] for u, c in zip(rows.user[index], rows.cut[index])]


UserFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def model_device(model) -> torch.device:
    """Where the model's weights (or, for a model without any, its buffers) are: its batches go there."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def serving(model, seed: int) -> Iterator[None]:
    """Score in eval mode, without autograd, with the global RNG seeded by `seed` (diffusion sampling), leaving
    the caller's random state and the model's train/eval mode as they were. (Scoring once built an autograd
    graph of every user vector: issue 18, bug 1.)"""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def row_order(n_rows: int, max_rows: int | None, seed: int) -> np.ndarray:
    """The rows to score: all, or a seeded sorted subsample of `max_rows` of them."""
    order = np.arange(n_rows)
    if max_rows is not None and n_rows > max_rows:
        order = np.sort(np.random.default_rng(seed).choice(order, max_rows, replace=False))
    return order


@contextmanager
def served(model, seed: int, retriever: Retriever | None = None, user_fn: UserFn | None = None,
           serve: ServeConfig = DEFAULT) -> Iterator[Callable[..., dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """How a model serves, the one rule for everything that reads its lists (evaluate, step_metrics, the app's and
    the notebooks' read-outs): under `serving(model, seed)`, the user vectors dimerec.serving gives for `serve`
    (`user_fn` names others), ranked by its rule (max, or the mixture: `serving.ranking`), the item table indexed
    once. Yields serve_batch(hist [B, L], k, exclude=None) -> {name: (vectors, item ids [B, k])}; successive
    calls continue one random stream, as evaluate's batches do."""
    retriever = ranking(model, serve).retriever(retriever)
    user_fn = user_fn or (lambda hist: {"final": user_vectors(model, hist, serve)})
    device = model_device(model)

    def serve_batch(hist: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None):
        return {name: (vectors, retriever.search(vectors, k, exclude=exclude))
                for name, vectors in user_fn(hist.to(device)).items()}

    with serving(model, seed):
        retriever.index(model.item_vectors())
        yield serve_batch


def served_lists(model, data: SeqDataset, users: np.ndarray, protocol: Protocol = "next-item", *,
                 mask_seen: bool = False, retriever: Retriever | None = None, user_fn: UserFn | None = None,
                 batch_size: int = 1024, seed: int = 0, max_rows: int | None = None,
                 serve: ServeConfig = DEFAULT) -> Iterator[tuple[EvalRows, np.ndarray, dict[str, np.ndarray]]]:
    """The top-50 lists evaluate scores, batch by batch: (the rows, the batch's row indices, {name: ids [b, 50]})."""
    rows = build_rows(data, users, protocol)
    order = row_order(len(rows.hist), max_rows, seed)
    with served(model, seed, retriever, user_fn, serve) as serve_batch:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            exclude = seen_items(data, rows, idx) if mask_seen else None
            lists = serve_batch(torch.from_numpy(rows.hist[idx]), max(CUTOFFS), exclude)
            yield rows, idx, {name: top.cpu().numpy() for name, (_, top) in lists.items()}


def evaluate(model, data: SeqDataset, users: np.ndarray, protocol: Protocol = "next-item", *,
             mask_seen: bool = False, retriever: Retriever | None = None, user_fn: UserFn | None = None,
             batch_size: int = 1024, seed: int = 0, max_rows: int | None = None,
             popularity: np.ndarray | None = None, serve: ServeConfig = DEFAULT) -> dict[str, dict[str, float]]:
    """Metrics of each user representation `user_fn` returns (default {"final": the vectors dimerec.serving
    serves under `serve`, ranked by its rule}).

    Returns {name: {"HR@10": …, …, "MRR@50": …}}: the means over rows, then, when `popularity` (training
    interactions per item, `data.item_popularity(split.train)`) is given, the beyond-accuracy aggregates
    over all rows' lists ("ItemCoverage@10", …). Sampling inside `user_fn` (diffusion) is seeded by `seed`
    without touching the caller's random state. `max_rows` evaluates a seeded subsample of rows.
    The lists are `served_lists`'s.
    """
    per_row: dict[str, list] = {}
    exposure: dict[str, dict[int, np.ndarray]] = {}
    for rows, idx, lists in served_lists(model, data, users, protocol, mask_seen=mask_seen, retriever=retriever,
                                         user_fn=user_fn, batch_size=batch_size, seed=seed, max_rows=max_rows,
                                         serve=serve):
        for name, top in lists.items():
            per_row.setdefault(name, []).append(ranking_metrics(top, rows.targets[idx]))
            if popularity is not None:
                counts = exposure_counts(top, data.n_items)
                exposure[name] = {n: exposure[name][n] + c for n, c in counts.items()} \
                    if name in exposure else counts
    out = {name: mean_metrics({m: np.concatenate([p[m] for p in parts]) for m in parts[0]})
           for name, parts in per_row.items()}
    if popularity is not None:
        for name in out:
            out[name].update(beyond_accuracy(exposure[name], popularity))
    return out


def chain_user_fn(model, serve: ServeConfig = DEFAULT) -> UserFn:
    """For evaluate(user_fn=...): the user vectors of x̂0 after every reverse step ("t=T" … "t=1", the paper's
    Fig. 5) and of the chain's end x_0 ("final"), for a model that `denoises`, its chain run as `serve` says."""
    def user_fn(hist: torch.Tensor) -> dict[str, torch.Tensor]:
        traj = trajectory(model, hist, serve)
        out = {f"t={t}": model.chain_user_vectors(traj.pred_x0[i]) for i, t in enumerate(traj.steps)}
        out["final"] = model.chain_user_vectors(traj.final)
        return out
    return user_fn


def step_metrics(model, data: SeqDataset, users: np.ndarray, protocol: Protocol = "next-item", *,
                 mask_seen: bool = False, seed: int = 0, max_rows: int | None = None,
                 serve: ServeConfig = DEFAULT) -> dict:
    """HR@50, NDCG@50 and HR@10 of x̂0 at each reverse step, and all metrics of the chain's end x_0: what a run's
    step_metrics.json holds (the trainer writes it for every model that denoises), ranked by `serve`'s rule."""
    per_step = evaluate(model, data, users, protocol, mask_seen=mask_seen, seed=seed, serve=serve,
                        user_fn=chain_user_fn(model, serve), max_rows=max_rows)
    steps = [{"t": int(name[2:]), "step": i + 1, **{k: per_step[name][k] for k in ("HR@50", "NDCG@50", "HR@10")}}
             for i, name in enumerate(n for n in per_step if n.startswith("t="))]
    return {"model": model.name, "preset": getattr(model.config, "preset", None), "dataset": data.name,
            "protocol": protocol, "T": len(steps), "steps": steps, "final": per_step["final"]}


SAMPLED_MIXTURE_REFUSAL = ("the sampled protocol ranks candidates by the max over the user vectors; a run served "
                           "with --serve-merge mixture is scored by the full ranking only")


def sampled_metrics(model, data: SeqDataset, users: np.ndarray, n_negatives: int = 100, *, cutoffs=(1, 5, 10),
                    batch_size: int = 1024, seed: int = 0, max_rows: int | None = None,
                    serve: ServeConfig = DEFAULT) -> dict[str, float]:
    """The sampled protocol of SASRec's paper (§IV-B) and many baselines' own reports, for sanity checks
    against them: each user's last item is ranked among `n_negatives` items drawn uniformly, without
    replacement, from the items the user never interacted with; one row per user (`last_only`).
    Not comparable with the full-ranking numbers of `evaluate` (sampled ranks are far kinder). The candidates
    are scored by the max over the vectors `serve` serves; a mixture-served run is refused."""
    if ranking(model, serve).merge != "max":
        raise DimeRecError(SAMPLED_MIXTURE_REFUSAL)
    rows = build_rows(data, users, "next-item", last_only=True)
    order = row_order(len(rows.hist), max_rows, seed)
    candidates = sampled_candidates(data, rows, order, n_negatives, seed)
    per_row = []
    device = model_device(model)
    with serving(model, seed):
        items = model.item_vectors()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            cand = torch.from_numpy(candidates[start:start + len(idx)]).to(device)
            users_k = user_vectors(model, torch.from_numpy(rows.hist[idx]).to(device), serve)  # [B, K, d]
            scores = max_over_interests(users_k, items[cand])  # [B, C]
            top = cand.gather(1, scores.argsort(dim=1, descending=True, stable=True))
            per_row.append(rank_metrics(top.cpu().numpy(), candidates[start:start + len(idx), -1:], cutoffs))
    return mean_metrics({m: np.concatenate([p[m] for p in per_row]) for m in per_row[0]})


def sampled_candidates(data: SeqDataset, rows: EvalRows, order: np.ndarray, n_negatives: int,
                       seed: int) -> np.ndarray:
    """[len(order), n_negatives + 1]: per row, distinct items its user never interacted with, then its target
    last (so a tie ranks the target below the negatives)."""
    rng = np.random.default_rng(seed)
    candidates = np.empty((len(order), n_negatives + 1), dtype=np.int64)
    for r, row in enumerate(order):
        seen = np.zeros(data.n_items, dtype=bool)
        seen[data.sequences[rows.user[row]]] = True
        pool = np.flatnonzero(~seen)
        if len(pool) < n_negatives:
            raise DimeRecError(f"user {rows.user[row]} has only {len(pool)} unseen items; "
                               f"{n_negatives} negatives cannot be drawn")
        candidates[r, :-1] = rng.choice(pool, n_negatives, replace=False)
        candidates[r, -1] = rows.targets[row, 0]
    return candidates
