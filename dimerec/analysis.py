"""Table 2 of the paper (SPEC §2): what the item embeddings know, and how varied the retrievals are.

- `linear_probe`: the paper freezes a trained model's item embeddings and trains a
  linear classifier of the item category on them. Here: a multinomial logistic
  regression on standardised features, scored by stratified k-fold cross-validation
  (accuracy and macro-F1), beside the majority-class floor.
- `probe_labels`: one label per item for that probe. ML-1M movies carry up to six
  genres; the probe needs one, so it takes the FIRST listed genre. (In ML-1M every
  genre list is in alphabetical order, so "first listed" is "alphabetically first":
  "Action|Thriller" is Action, "Comedy|Drama" is Comedy.)
- `category_diversity`: the average number of distinct categories among each
  evaluation row's top-100 retrieved items (an item's score is its best inner
  product over the K interests, as in evaluation).

    from dimerec.analysis import linear_probe, category_diversity
    linear_probe(model.item_vectors(), data)               # {"accuracy": ..., "majority_accuracy": ...}
    category_diversity(model, data, data.split().test)     # {"mean": ..., "rows": ...}
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from dimerec.data.dataset import SeqDataset
from dimerec.errors import DataError
from dimerec.evaluate import Protocol, build_rows, model_device, row_order, seen_items, served, serving
from dimerec.serving import DEFAULT, ServeConfig, ranking, trajectory, user_vectors

MIN_CLASS_ITEMS = 5  # smaller classes are dropped: stratified 5-fold CV needs one item per class per fold
COUNTING = ("distinct categories among the top-k items; an item with several categories contributes "
            "all of them, an item without a category contributes none")


def _require_categories(data: SeqDataset) -> None:
    if not data.item_categories or not any(data.item_categories):
        raise DataError(f"{data.name}: the items have no categories, so Table 2 cannot be computed")


def probe_labels(data: SeqDataset, min_items: int = MIN_CLASS_ITEMS) -> tuple[np.ndarray, np.ndarray, str]:
    """One category label per item: (item ids [n] int64, labels [n] str, description).

    An item with several categories is labelled by the first one listed; an item without a
    category is skipped; classes with fewer than `min_items` items are dropped with their items.
    """
    _require_categories(data)
    first = {i: cats[0] for i, cats in enumerate(data.item_categories) if cats}
    counts = Counter(first.values())
    kept = {c for c, n in counts.items() if n >= min_items}
    item_ids = np.array(sorted(i for i, c in first.items() if c in kept), dtype=np.int64)
    labels = np.array([first[i] for i in item_ids], dtype=str)
    multi = [cats for cats in data.item_categories if len(cats) > 1]
    order = ""
    if multi and all(cats == sorted(cats) for cats in multi):
        order = " (every multi-category list here is alphabetical, so this is the alphabetically first)"
    dropped = sorted(counts.keys() - kept)
    description = (f"first listed category{order}; {len(kept)} classes; "
                   f"{data.n_items - len(first)} items with no category skipped; "
                   f"{len(dropped)} class{'es' * (len(dropped) != 1)} with fewer than {min_items} items dropped"
                   + (f" ({', '.join(dropped)}: {sum(counts[c] for c in dropped)} items)" if dropped else ""))
    return item_ids, labels, description


def linear_probe(item_vectors: np.ndarray | torch.Tensor, data: SeqDataset, seed: int = 0,
                 folds: int = 5) -> dict:
    """Cross-validated accuracy of a linear classifier of item categories on frozen item embeddings.

    item_vectors [n_items, d]. Per fold, the features are standardised on the training part and a
    multinomial logistic regression (lbfgs, L2 with C = 1) is fitted; the folds are a seeded
    stratified shuffle. Deterministic for a seed. `majority_accuracy` is the share of the most
    common label: what predicting one class for every item scores.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, make_scorer
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(item_vectors, torch.Tensor):
        item_vectors = item_vectors.detach().float().cpu().numpy()
    x = np.asarray(item_vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != data.n_items:
        raise ValueError(f"item_vectors must be [n_items={data.n_items}, d]; got shape {x.shape}")
    item_ids, labels, description = probe_labels(data, min_items=max(MIN_CLASS_ITEMS, folds))
    x = x[item_ids]
    # lbfgs fits the multinomial (softmax) model for more than two classes; max_iter leaves room to
    # converge on badly conditioned tables (trained ML-1M tables converge in under 100 iterations).
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_validate(classifier, x, labels, cv=cv, scoring={
        "accuracy": "accuracy",
        # a class the classifier never predicts has an undefined precision: counted as 0
        "macro_f1": make_scorer(f1_score, average="macro", zero_division=0),
    })
    _, counts = np.unique(labels, return_counts=True)
    return {
        "accuracy": float(scores["test_accuracy"].mean()),
        "accuracy_std": float(scores["test_accuracy"].std()),
        "macro_f1": float(scores["test_macro_f1"].mean()),
        "macro_f1_std": float(scores["test_macro_f1"].std()),
        "majority_accuracy": float(counts.max() / counts.sum()),
        "fold_accuracy": scores["test_accuracy"].tolist(),
        "n_items": int(len(item_ids)),
        "n_classes": int(len(counts)),
        "folds": folds,
        "seed": seed,
        "labels": description,
    }


def category_matrix(data: SeqDataset) -> tuple[np.ndarray, list[str]]:
    """[n_items, C] bool: item i has category c (every listed category), and the C names."""
    _require_categories(data)
    names = data.category_names
    column = {c: j for j, c in enumerate(names)}
    has = np.zeros((data.n_items, len(names)), dtype=bool)
    for i, cats in enumerate(data.item_categories):
        has[i, [column[c] for c in cats]] = True
    return has, names


@torch.no_grad()
def category_diversity(model, data: SeqDataset, users: np.ndarray, k: int = 100,
                       protocol: Protocol = "next-item", max_rows: int | None = None, seed: int = 0, *,
                       mask_seen: bool = False, batch_size: int = 512, serve: ServeConfig = DEFAULT) -> dict:
    """Average number of distinct categories among the top-k items of each evaluation row.

    The rows are those `evaluate` scores for `users` under `protocol` (build_rows); `max_rows` takes the
    same seeded subsample as `evaluate`. Items are ranked as `evaluate.served` ranks them under `serve` (exact
    search: ties go to the lower id). An item with several categories counts all of them; an item without one
    counts none. Sampling (diffusion) is seeded by `seed` without touching the caller's random state. Returns
    mean and std over rows and the row count.
    """
    has, names = category_matrix(data)
    rows = build_rows(data, users, protocol)
    order = row_order(len(rows.hist), max_rows, seed)  # the rows evaluate() scores for the same arguments
    counts = []
    with served(model, seed, serve=serve) as serve_batch:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            exclude = seen_items(data, rows, idx) if mask_seen else None
            _, top = serve_batch(torch.from_numpy(rows.hist[idx]), k, exclude)["final"]
            counts.append(has[top.cpu().numpy()].any(axis=1).sum(axis=1))  # [B, k, C] -> [B]
    counts = np.concatenate(counts) if counts else np.zeros(0)
    return {
        "mean": float(counts.mean()) if len(counts) else 0.0,
        "std": float(counts.std()) if len(counts) else 0.0,
        "rows": int(len(counts)),
        "k": k,
        "protocol": protocol,
        "n_categories": len(names),
        "counting": COUNTING,
    }


@torch.no_grad()
def chain_angles(model, data: SeqDataset, users: np.ndarray, n_samples: int = 8, max_rows: int | None = 2000,
                 seed: int = 0, protocol: Protocol = "next-item", batch_size: int = 512,
                 serve: ServeConfig = DEFAULT) -> list[dict]:
    """Issue 16, hypothesis 6: where the reverse chain's guesses land relative to the true next item.

    For each reverse step (the rows `evaluate` scores, one target each): the mean angle (degrees) between the
    true target's unit embedding and (a) each sample's x̂0, (b) the mean direction of the S samples' x̂0, and
    (c) the mean angle between two samples of one user (the spread of the learned p(x0 | g)). A chain whose
    samples are each farther from the target than their mean is too broad (each sample commits to one
    possibility); one whose mean is far too is mis-centred. The last row ("x_0") is the chain's end point."""
    from dimerec import sphere

    rows = build_rows(data, users, protocol)
    order = row_order(len(rows.hist), max_rows, seed)
    device = model_device(model)
    sums: dict[int, np.ndarray] = {}
    steps: list = []
    with serving(model, seed):
        items = sphere.normalize(model.item_vectors())
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            traj = trajectory(model, torch.from_numpy(rows.hist[idx]).to(device), serve, n_samples=n_samples)
            target = items[torch.from_numpy(rows.targets[idx, 0]).to(device)]  # [B, d]
            points = torch.cat([traj.pred_x0, traj.final[None]])  # [T+1, B, S, d]
            steps = [*traj.steps, "x_0"]
            unit = sphere.normalize(points)
            each = torch.rad2deg(torch.acos((unit * target[None, :, None]).sum(-1).clamp(-1, 1)))  # [T+1, B, S]
            mean_dir = sphere.normalize(unit.mean(2))  # [T+1, B, d]
            of_mean = torch.rad2deg(torch.acos((mean_dir * target[None]).sum(-1).clamp(-1, 1)))  # [T+1, B]
            cos = torch.einsum("tbsd,tbrd->tbsr", unit, unit).clamp(-1, 1)
            S = unit.shape[2]
            pairs = (torch.rad2deg(torch.acos(cos)).sum((-1, -2)) / max(S * (S - 1), 1))  # [T+1, B] off-diagonal
            for i in range(points.shape[0]):
                add = np.array([float(each[i].mean(1).sum()), float(of_mean[i].sum()), float(pairs[i].sum()),
                                len(idx)])
                sums[i] = sums.get(i, np.zeros(4)) + add
    return [{"step": i + 1 if steps[i] != "x_0" else "x_0", "t": steps[i],
             "angle of each sample": s[0] / s[3], "angle of the samples' mean": s[1] / s[3],
             "angle between samples": s[2] / s[3]} for i, s in sorted(sums.items())]


@torch.no_grad()
def serving_cost(model, data: SeqDataset, users: np.ndarray, batch_size: int = 1024, repeats: int = 3,
                 seed: int = 0, serve: ServeConfig = DEFAULT) -> float:
    """Milliseconds per user to serve a batch of `batch_size` rows (user vectors + top-50 retrieval) as `serve`
    says, the median of `repeats` timings, on the model's device and this process's threads."""
    import time

    rows = build_rows(data, users, "next-item")
    order = row_order(len(rows.hist), batch_size, seed)
    hist = torch.from_numpy(rows.hist[order]).to(model_device(model))
    retriever = ranking(model, serve).retriever()
    timings = []
    with serving(model, seed):
        retriever.index(model.item_vectors())
        for _ in range(repeats):
            start = time.perf_counter()
            retriever.search(user_vectors(model, hist, serve), 50)
            timings.append(time.perf_counter() - start)
    return 1000 * float(np.median(timings)) / len(order)
