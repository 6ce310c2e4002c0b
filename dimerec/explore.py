"""Read-outs of a trained model for the app and the notebooks: no UI code here.

- `SphereProjection` / `fit_sphere_projection`: a fixed linear "camera" from the
  64-d unit sphere to the 3-D sphere (three orthonormal axes that keep the item
  categories apart, then back onto the unit sphere);
- `served_top`: the top 50 a run serves a history, by the evaluator's own rule (`evaluate.served`: the run's
  serve mode, samples and merge), so the app shows the lists its metrics.json scored;
- `user_landings`: where each user's samples (or user vectors) land, and the top 50 served;
- `UserSamples` / `sample_user`: a user's reverse runs, with what each step
  would recommend (the samples merged as the run merges them);
- `forward_paths`: the forward noise applied to one item, step by step;
- `nearest_items`: retrieval for vectors of any shape; `angle_to`: angles to one target;
- `great_circle`: points along the arc between two points of the 3-D sphere, for drawing.

Why a linear projection rather than UMAP: x_T starts far from every item (a
random point on S^63 is at ≈ π/2 from all of them), and a neighbour-graph
embedding (UMAP) can only place new points near the items it was fitted on, so
it would draw the pure-noise start as if it already sat inside a category. A
linear map draws every x_t honestly: a random start lands at a random place on
the 3-D sphere, and the path to x_0 is the shadow of the 64-d path. It is also
instant, where UMAP takes 5-20 s per run on two cores. The price: three axes
hold only part of the item table's spread (`explained`), so categories that
are apart in 64-d can overlap in the picture. Choosing the axes that separate
the categories (a shrunk LDA) rather than the axes of largest spread (PCA)
raises the share of items' 10 nearest neighbours in the picture that share
their category from about 0.5 to 0.8-0.9 on `planted` (UMAP: 1.0; in 64-d: 1.0).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dimerec import sphere
from dimerec.evaluate import served
from dimerec.retrieval import TorchRetriever
from dimerec.serving import DEFAULT, ServeConfig, ranking, trajectory, user_vectors


@dataclass
class SphereProjection:
    components: np.ndarray  # [3, d]: the three viewing axes (orthonormal rows)
    method: str  # "categories" (the axes that best separate the item categories) or "pca"
    explained: float  # share of the normalised item table's squared length along the three axes

    def __call__(self, vectors) -> np.ndarray:
        """[..., d] (torch or numpy, any length) -> [..., 3] points on the unit sphere."""
        v = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        shadow = sphere.normalize(v) @ torch.from_numpy(self.components).T  # [..., 3]
        return sphere.normalize(shadow).numpy()


def fit_sphere_projection(item_vectors: torch.Tensor, labels: np.ndarray | None = None) -> SphereProjection:
    """Three orthonormal viewing axes for the unit item vectors, then back onto the unit sphere.

    With category labels (at least 4 categories): the three discriminant directions of the
    categories (Fisher's LDA, shrunk: most spread between category centres relative to the
    spread inside them), made orthonormal, so that the view is a rotation-and-drop of the 64-d space
    chosen to keep categories apart. Without labels: the top three singular vectors of the
    (uncentred) table. Either way the map is linear, so a uniformly random start maps to a
    uniformly random direction and any x_t can be drawn, not only the fitted items."""
    x = sphere.normalize(item_vectors.detach().float()).numpy().astype(np.float64)  # [n, d]
    if x.shape[1] < 3:  # a table of fewer than 3 dimensions (MostPopular's scores) is drawn on its own axes
        return SphereProjection(components=np.eye(3, x.shape[1], dtype=np.float32), method="identity",
                                explained=1.0)
    method, axes = "pca", None
    if labels is not None and len(np.unique(labels)) >= 4:
        try:
            axes, method = _discriminant_axes(x, np.asarray(labels)), "categories"
        except np.linalg.LinAlgError:  # a degenerate table (e.g. barely trained): fall back to PCA
            axes = None
    if axes is None:
        axes = np.linalg.svd(x, full_matrices=False)[2][:3].T  # [d, 3]
    components = np.linalg.qr(axes)[0].T  # [3, d] orthonormal
    # A fixed sign convention, so the picture does not flip between fits of the same table.
    signs = np.sign(components[np.arange(3), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    explained = float(((x @ components.T) ** 2).sum() / (x ** 2).sum())
    return SphereProjection(components=components.astype(np.float32), method=method, explained=explained)


def _discriminant_axes(x: np.ndarray, labels: np.ndarray, n_axes: int = 3) -> np.ndarray:
    """Fisher's LDA axes, [n, d] -> [d, n_axes], with the within-category covariance shrunk halfway
    to a multiple of the identity. Pure LDA picks axes that hold ~1-5% of the items' length (the
    picture would magnify a sliver of the space); PCA of the category centres mixes categories.
    Measured on planted: about 25% of the length, 80-90% of items' 10 nearest neighbours in the
    picture share their category."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.5).fit(x, labels)
    return lda.scalings_[:, :n_axes]


@torch.no_grad()
def nearest_items(vectors: torch.Tensor, item_vectors: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None,
                  retriever: TorchRetriever | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items of vectors [B, K, d], the K merged by `retriever` (default: an item scores its best inner
    product over the K) -> ids [B, k] and their scores [B, k]."""
    retriever = retriever or TorchRetriever()
    retriever.index(item_vectors)
    ids = retriever.search(vectors, k, exclude=exclude)
    return ids.numpy(), torch.gather(retriever.scores(vectors), 1, ids).numpy()


@torch.no_grad()
def served_top(model, hist: torch.Tensor, seed: int = 0, k: int = 50,
               serve: ServeConfig = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """The top-k the model serves histories [B, L] as `serve` says (the run's serving), as the evaluator scores
    them (`evaluate.served`, the global random stream seeded by `seed`) -> ids [B, k] and their merged scores
    [B, k]. For one history this is the list `evaluate` ranks for it with the same seed."""
    with served(model, seed, serve=serve) as serve_batch:
        vectors, ids = serve_batch(hist, k)["final"]
    retriever = ranking(model, serve).retriever()
    retriever.index(model.item_vectors())
    return ids.numpy(), torch.gather(retriever.scores(vectors), 1, ids).numpy()


@dataclass
class UserSamples:
    """S reverse runs of one history. Step k = 0..T of the reverse process sits at x_{T-k}."""
    steps: list[int]  # [T, T-1, ..., 1]: the t of each reverse step
    x_t: np.ndarray  # [T+1, S, d]: x_T ... x_0
    recommend: np.ndarray  # [T+1, S, d]: what each sample would be retrieved with after k steps
    top: np.ndarray  # [T+1, k_top] items of the S samples merged as the run merges them (serving.ranking)
    top_scores: np.ndarray  # [T+1, k_top]
    sample_top: np.ndarray  # [T+1, S, n_sample_top] each sample's own nearest items

    @property
    def T(self) -> int:
        return len(self.steps)


@torch.no_grad()
def sample_user(model, hist: torch.Tensor, n_samples: int, seed: int = 0, k_top: int = 50,
                n_sample_top: int = 5, serve: ServeConfig = DEFAULT) -> UserSamples:
    """Run the reverse process for one history [1, L] as `serve` runs it (its guidance weight, start and guess;
    `n_samples` chains) and read out every step.

    After k reverse steps the sample sits at x_{T-k}; what it would recommend there is x̂0, the
    denoiser's guess of x_0 from that point (for k = T: x_0 itself, what serving uses)."""
    traj = trajectory(model, hist, serve, n_samples=n_samples, generator=torch.Generator().manual_seed(seed))
    x_t = traj.x_t[:, 0]  # [T+1, S, d]
    recommend = torch.cat([traj.pred_x0[:, 0], traj.final[0][None]])  # [T+1, S, d]
    served = model.chain_user_vectors(recommend)  # [T+1, S, d'] what retrieval scores each point as
    items = model.item_vectors()
    top, top_scores = nearest_items(served, items, k_top, retriever=ranking(model, serve).retriever())
    n_steps, S, d = served.shape
    sample_top, _ = nearest_items(served.reshape(n_steps * S, 1, d), items, n_sample_top)
    return UserSamples(steps=list(traj.steps), x_t=x_t.numpy(), recommend=recommend.numpy(), top=top,
                       top_scores=top_scores, sample_top=sample_top.reshape(n_steps, S, n_sample_top))


@torch.no_grad()
def user_landings(model, hists: list[torch.Tensor], n_samples: int, seed: int = 0,
                  serve: ServeConfig = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """For each history [1, L]: the nearest item of each of its vectors — the ends x_0 of `n_samples` reverse runs
    (seeded as `sample_user`) for a model that denoises, else its K interests — [U, S or K], and the top 50
    items of those vectors merged as the run merges them [U, 50] (for a model that denoises, what `sample_user`'s
    last step shows for the same samples; the list the run serves is `served_top`'s)."""
    items = model.item_vectors()
    if model.denoises:
        vectors = torch.cat([model.chain_user_vectors(trajectory(
            model, h, serve, n_samples=n_samples, generator=torch.Generator().manual_seed(seed)).final) for h in hists])
        served = vectors  # [U, S, d]
    else:
        batch = torch.cat(hists)
        vectors, served = model.interests(batch)[0], user_vectors(model, batch, serve)  # [U, K, d], [U, K', d]
    U, S, d = vectors.shape
    if d == items.shape[1]:
        first, _ = nearest_items(vectors.reshape(U * S, 1, d), items, 1)
    else:  # interests outside the item space (DreamRec's guidance): the served vectors' nearest items
        first, _ = nearest_items(served.reshape(-1, 1, served.shape[-1]), items, 1)
        S = served.shape[1]
    merged, _ = nearest_items(served, items, 50, retriever=ranking(model, serve).retriever())
    return first[:, 0].reshape(U, S), merged


@torch.no_grad()
def forward_paths(model, x0: torch.Tensor, n_paths: int, seed: int = 0) -> np.ndarray:
    """The forward noise (Alg. 1) applied to one item vector x0 [d], with the noise drawn once per
    path and the step t growing 0..T: [T+1, n_paths, d]. Each path is one noise draw seen at every t."""
    diffusion = model.diffusion
    start = diffusion.prepare_x0(x0.detach().float())[None].expand(n_paths, -1)  # [n, d]
    noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(seed))
    points = [start]
    for t in range(1, diffusion.T + 1):
        points.append(diffusion.q_sample(start, torch.full((n_paths,), t, dtype=torch.long), noise))
    return torch.stack(points).numpy()


def dominant_categories(top: np.ndarray, item_category: np.ndarray) -> np.ndarray:
    """The most frequent category among each row's items: top [K, n] item ids -> [K] category ids."""
    cats = np.asarray(item_category)[np.asarray(top)]
    return np.array([np.bincount(row).argmax() for row in cats])


def category_shift(before: np.ndarray, after: np.ndarray, item_category: np.ndarray) -> dict[int, int]:
    """How many items of each category a list gained (>0) or lost (<0) from `before` to `after` (item ids)."""
    n = int(np.max(item_category)) + 1
    delta = (np.bincount(np.asarray(item_category)[np.asarray(after)], minlength=n)
             - np.bincount(np.asarray(item_category)[np.asarray(before)], minlength=n))
    return {int(c): int(d) for c, d in enumerate(delta) if d}


def true_item_ranks(top: np.ndarray, item: int) -> np.ndarray:
    """1-based rank of `item` in each row of top [..., n] (NaN where it is not among the n): shape [...]."""
    top = np.asarray(top)
    hit = top == item
    return np.where(hit.any(-1), hit.argmax(-1) + 1, np.nan).astype(float)


def angle_to(vectors, target) -> np.ndarray:
    """Geodesic angle in degrees between the directions of vectors [..., d] and of target [d]."""
    v = sphere.normalize(torch.as_tensor(np.asarray(vectors), dtype=torch.float32))
    t = sphere.normalize(torch.as_tensor(np.asarray(target), dtype=torch.float32))
    return np.degrees(sphere.geodesic_distance(v, t.expand_as(v)).numpy())


def neighbour_agreement(points: np.ndarray, labels: np.ndarray, k: int = 10, max_items: int = 2000,
                        seed: int = 0) -> float:
    """Share of items' k nearest neighbours (by cosine, among up to max_items items) that share their label."""
    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels)
    if len(points) > max_items:
        keep = np.random.default_rng(seed).choice(len(points), max_items, replace=False)
        points, labels = points[keep], labels[keep]
    unit = points / np.linalg.norm(points, axis=1, keepdims=True).clip(1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(points) - 1)
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    return float((labels[neighbours] == labels[:, None]).mean())


def great_circle(a: np.ndarray, b: np.ndarray, n: int = 8) -> np.ndarray:
    """n points from a to b (unit 3-vectors) along the shorter arc of the 3-D sphere: [n, 3]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    omega = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
    w = np.linspace(0.0, 1.0, n)
    if omega < 1e-6 or abs(omega - np.pi) < 1e-6:  # the same point, or antipodes: no unique arc
        out = (1 - w)[:, None] * a + w[:, None] * b
    else:
        out = (np.sin((1 - w) * omega)[:, None] * a + np.sin(w * omega)[:, None] * b) / np.sin(omega)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-9)


def chain_step(t: int, T: int) -> int:
    """The explorer's step number of the chain's state x_t: x_T (pure noise) is step 0 and x_0 is step T, on every
    page. The x̂0 guessed from x_t is shown at x_t's step, so step_metrics.json's entries (t = T..1) sit at steps
    0..T-1 and the served x_0 at step T."""
    return T - t


def chain_verdict(step_metrics: dict, references: dict[str, float] | None = None, metric: str = "HR@50",
                  tolerance: float = 0.005, ceiling: float | None = None) -> dict:
    """What a run's step_metrics.json says about its reverse chain, in numbers and one sentence.

    Compares `metric` of x̂0 guessed from pure noise x_T (step 0) with the one guessed from x_1 (step T-1; a
    change within `tolerance` counts as flat), names the best step (numbered by `chain_step`), and places the
    served x_0 ("final", step T) beside the `references` (label -> the same metric on validation, e.g. the
    no-diffusion control or popularity) and, when given, the `ceiling` (the planted oracle). Returns {"first",
    "last", "best_step", "direction" ("rises", "falls" or "stays flat"), "final", "sentence"}."""
    steps = step_metrics["steps"]
    T = int(step_metrics.get("T") or len(steps))
    first, last = steps[0][metric], steps[-1][metric]
    best = max(steps, key=lambda s: s[metric])
    best_step = chain_step(best["t"], T)
    direction = "rises" if last - first > tolerance else "falls" if first - last > tolerance else "stays flat"
    final = (step_metrics.get("final") or {}).get(metric, last)
    sentence = (f"Along this chain {metric} of the guess x̂0 {direction}: {first:.1%} at step 0 (from pure noise), "
                f"{last:.1%} at step {T - 1} (best {best[metric]:.1%} at step {best_step})"
                + ("; the paper's Fig. 5 shows it rising." if direction != "rises" else
                   ", as the paper's Fig. 5 shows.")
                + f" Served (x_0, step {T}): {final:.1%}")
    beside = [f"{label} {value:.1%}" for label, value in (references or {}).items()]
    if beside:
        above = [label for label, value in references.items() if final >= value]
        below = [label for label, value in references.items() if final < value]
        sentence += (f", against {', '.join(beside)}: "
                     + (f"above {', '.join(above)}" if above else "")
                     + ("; " if above and below else "")
                     + (f"below {', '.join(below)}" if below else "") + ".")
    else:
        sentence += "."
    if ceiling is not None:  # the oracle of a world whose generator is known: the best any model can do there
        sentence += f" The ceiling (an oracle that knows the generator): {ceiling:.1%}."
    return {"first": first, "last": last, "best_step": best_step, "direction": direction, "final": final,
            "sentence": sentence}


def oracle_reference(data, users: np.ndarray, protocol: str = "next-item", max_rows: int | None = None,
                     seed: int = 0) -> dict[str, float] | None:
    """The metrics of ranking by the planted world's exact next-item probabilities (`planted.next_item_probabilities`)
    on `users`' rows, the same rows evaluate scores: the ceiling no model of that data can beat in expectation.
    None for data without the planted ground truth or a protocol other than next-item."""
    from dimerec.data.planted import next_item_probabilities
    from dimerec.evaluate import build_rows, row_order
    from dimerec.metrics import CUTOFFS, mean_metrics, ranking_metrics

    if data.ground_truth is None or "item_chain_pos" not in data.ground_truth or protocol != "next-item":
        return None
    rows = build_rows(data, users, protocol)
    order = row_order(len(rows.hist), max_rows, seed)
    probs = np.stack([next_item_probabilities(data, int(u), int(c)) for u, c in zip(rows.user[order],
                                                                                     rows.cut[order])])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :max(CUTOFFS)]
    return mean_metrics(ranking_metrics(top, rows.targets[order]))


def popularity_reference(data, users: np.ndarray, train_users: np.ndarray, protocol: str = "next-item",
                         max_rows: int | None = None, seed: int = 0) -> dict[str, float]:
    """The metrics of MostPopular (counted on `train_users`) on `users`' rows: the floor a chain is drawn against."""
    from dimerec.evaluate import evaluate
    from dimerec.models.pop import MostPopular

    pop = MostPopular(data.n_items, data.max_len, MostPopular.Config())
    pop.fit_statistics(data, train_users)
    return evaluate(pop, data, users, protocol, max_rows=max_rows, seed=seed)["final"]


def redundant_interests(top: np.ndarray, n: int = 10, min_shared: float = 0.8) -> list[tuple[int, int, int]]:
    """Pairs of interests that point at the same items: (i, j, shared) where `shared` of their `n` nearest items
    (top: [K, >= n]) are the same, at least `min_shared` of them. Such interests are one interest said twice."""
    sets = [set(row[:n].tolist()) for row in np.asarray(top)]
    pairs = []
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            shared = len(sets[i] & sets[j])
            if shared >= min_shared * n:
                pairs.append((i, j, shared))
    return pairs


def vector_lengths(vectors) -> tuple[float, float, float]:
    """The smallest, median and largest length of a table of vectors [n, d] (item vectors are not unit length,
    so a score, their inner product with a user vector, is not a cosine)."""
    lengths = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1)
    return float(lengths.min()), float(np.median(lengths)), float(lengths.max())


def loss_summary(losses: pd.DataFrame, terms=("L_gem", "L_recon", "L_ssm")) -> pd.DataFrame:
    """Whether a run's losses fell, and whether they rose again (the paper's Fig. 4 claim), from its losses.csv
    (`runs.read_losses`): a row per term it logged, with the mean over the first and the last 10% of its steps,
    the lowest rolling mean over a window of that many steps, and the rise of the last from the lowest, in %.
    Means over a tenth of the steps, so that one noisy step does not decide whether it rose or fell."""
    n = max(1, len(losses) // 10)
    rows = []
    for term in (t for t in terms if t in losses.columns):
        smooth = losses[term].rolling(n, min_periods=1).mean()
        rows.append({"loss": term, "first 10%": float(losses[term].head(n).mean()),
                     "lowest 10% window": float(smooth.iloc[n - 1:].min()),
                     "last 10%": float(losses[term].tail(n).mean()), "steps": len(losses)})
    summary = pd.DataFrame(rows, columns=["loss", "first 10%", "lowest 10% window", "last 10%", "steps"])
    summary["rise from lowest (%)"] = 100 * (summary["last 10%"] / summary["lowest 10% window"] - 1)
    return summary


def grw_comparison(grw: dict, no_grw: dict, grw_recon: tuple[float, float] | None,
                   no_grw_recon: tuple[float, float] | None, metric: str = "HR@50") -> str:
    """One sentence on what switching GRW off did in these two runs, from their files: `grw` and `no_grw` are the
    runs' test metrics (metrics.json), the recons (start, end) of their L_recon (`loss_summary`'s first and
    last 10%)."""
    a, b = grw.get(metric), no_grw.get(metric)
    parts = []
    if a is not None and b is not None:
        side = "above" if b > a else "below" if b < a else "level with"
        parts.append(f"without GRW the test {metric} is {b:.1%}, {side} the GRW run's {a:.1%}")
    if no_grw_recon is not None:
        start, end = no_grw_recon
        how = "rises" if end > start else "falls"
        parts.append(f"its L_recon {how} over training ({start:.3g} → {end:.3g})")
        if grw_recon is not None:
            parts[-1] += (f", where with GRW it {'rises' if grw_recon[1] > grw_recon[0] else 'falls'} "
                          f"({grw_recon[0]:.3g} → {grw_recon[1]:.3g})")
    if not parts:
        return ""
    return "In these runs, " + "; ".join(parts) + "."


# ---- the "sample or mean?" lesson (issue 30) ---------------------------------------------------------------------
LESSON_SAMPLES = (1, 2, 4, 8, 16, 32, 64)  # S, the samples whose mixture the lesson ranks by


def lesson_servings(serve: ServeConfig, n_samples: int) -> dict[str, ServeConfig]:
    """The two ways the lesson serves a run served as `serve` (its guidance weight kept): "mean", the first reverse
    step's x̂0 (E[x0 | g]); "mixture", the S = `n_samples` chains' ends as a predictive distribution (S = 1: the
    chain itself)."""
    chain = dataclasses.replace(serve, serve="final", serve_merge="max", merge_scale=None)
    return {"mean": dataclasses.replace(chain, serve="mean", serve_samples=1),
            "mixture": dataclasses.replace(chain, serve_samples=n_samples, serve_merge="mixture")}


def sample_or_mean(model, data, users: np.ndarray, serve: ServeConfig, *, protocol: str = "next-item",
                   seed: int = 0, max_rows: int | None = 1000, sample_counts=LESSON_SAMPLES) -> dict:
    """HR@50 and NDCG@50 over the rows `evaluate` scores for `users` (a seeded subsample of `max_rows`) of the
    one-step mean and of the mixture of S chains for each S in `sample_counts`: what the lesson draws. Slow (the
    S chains of every row): the app's built-in runs keep it in their folder (sample_or_mean.json)."""
    from dimerec.evaluate import evaluate

    def score(how: ServeConfig) -> dict:
        metrics = evaluate(model, data, users, protocol, seed=seed, max_rows=max_rows, serve=how)["final"]
        return {key: metrics[key] for key in ("HR@50", "NDCG@50", "HR@10")}

    return {"protocol": protocol, "seed": seed, "max_rows": max_rows, "serving": dataclasses.asdict(serve),
            "mean": score(lesson_servings(serve, 1)["mean"]),
            "mixture": {str(s): score(lesson_servings(serve, s)["mixture"]) for s in sample_counts}}


def run_lesson(model, data, config: dict, serve: ServeConfig, max_rows: int | None = 1000) -> dict:
    """`sample_or_mean` on a run's validation users, at its protocol, seed and serving (config: its config.json as
    runs.read_config gives it): what a run's sample_or_mean.json holds."""
    tc = config["train_config"]
    users = data.split(int(tc.get("split_seed", 0))).valid
    return sample_or_mean(model, data, users, serve, protocol=tc.get("protocol", "next-item"),
                          seed=int(tc.get("seed", 0)), max_rows=max_rows)


def odds_oracle(odds=(0.5, 0.3, 0.2), sample_counts=LESSON_SAMPLES, trials: int = 20000, seed: int = 0) -> dict:
    """The lesson's picture (notebook 02's oracle that knows only the odds): the user clicks item i with probability
    odds[i], and a list holds one item. Ranking by the mean puts the most likely item first: it hits max(odds) of
    the time. A ranking from S samples (each sample one item drawn by the odds; first the item drawn most often,
    ties broken at random) hits sum_i p_i^2 with one sample and approaches max(odds) as S grows. Monte Carlo over
    `trials` users, seeded. Returns {"mean": rate, "samples": {S: rate}, "one sample exact": sum p^2}."""
    rng = np.random.default_rng(seed)
    p = np.asarray(odds, dtype=float)
    clicks = rng.choice(len(p), size=trials, p=p)
    rates = {}
    for s in sample_counts:
        draws = rng.choice(len(p), size=(trials, s), p=p)
        counts = np.stack([(draws == i).sum(1) for i in range(len(p))], axis=1) + rng.random((trials, len(p))) * 0.5
        rates[str(s)] = float((counts.argmax(1) == clicks).mean())
    return {"odds": p.tolist(), "mean": float(p.max()), "samples": rates, "one sample exact": float((p ** 2).sum())}


# ---- preset users: a few users worth opening first, each with the reason it was picked ------------------------------

PRESET_POOL = 400  # chain-based presets are picked among at most this many held-out users (a seeded draw)


def item_categories(data, missing: str = "(no category)") -> tuple[list[str], np.ndarray]:
    """Each item's first category: the category names, most frequent first, and each
    item's index into them [n_items]; items without a category get `missing`."""
    import pandas as pd

    firsts = [cats[0] if cats else missing for cats in (data.item_categories or [[]] * data.n_items)]
    names = list(pd.Series(firsts).value_counts().index)
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[name] for name in firsts], dtype=np.int64)


def held_out_users(data, split) -> np.ndarray:
    """The validation and test users of `split` with at least two items (a history and a next item), sorted."""
    users = np.concatenate([split.valid, split.test])
    return np.array(sorted(int(u) for u in users if len(data.sequences[u]) >= 2), dtype=np.int64)


def user_history(data, user: int) -> np.ndarray:
    """The history the app shows a held-out user by: the last max_len items before the final one (the next item)."""
    seq = data.sequences[user]
    return seq[max(0, len(seq) - 1 - data.max_len):len(seq) - 1]


def _since_drift(held: np.ndarray) -> int:
    """Steps from the planted interests' last change to the user's last step (the whole length when none)."""
    changed = np.flatnonzero((held[1:] != held[:-1]).any(axis=1))
    return int(len(held) - 1 - (changed[-1] + 1)) if len(changed) else len(held)


def _pick(rows: list[dict], picks: list[tuple[int, str]], key, reason, where=lambda r: True) -> None:
    """Add the first row (by `key`, then user id) that passes `where` and is not picked yet, with its reason."""
    taken = {u for u, _ in picks}
    for row in sorted((r for r in rows if where(r) and r["user"] not in taken), key=lambda r: (key(r), r["user"])):
        picks.append((int(row["user"]), reason(row)))
        return


@torch.no_grad()
def chain_presets(model, data, users: np.ndarray, item_category: np.ndarray, n_samples: int = 6, seed: int = 0,
                  pool: int = PRESET_POOL) -> list[tuple[int, str]]:
    """Up to four users worth opening first, picked by what the model does with them: where each one's
    `n_samples` reverse runs (seeded as `sample_user`, so the reason matches what the pages show) or interests
    land, and the rank of the true next item in their merged top 50 (`user_landings`). Among at most `pool`
    held-out `users` (a seeded draw). Slow for long chains (DreamRec: ~30 s on two cores): made once, with the
    run (app/make_default_runs.py stores it: runs.write_presets); `data_presets` is the instant fallback."""
    users = np.asarray(users)
    if len(users) > pool:
        users = np.sort(np.random.default_rng(0).choice(users, pool, replace=False))
    hists = [history_tensor(data, user_history(data, u)) for u in users]
    landing, merged = user_landings(model, hists, n_samples=n_samples, seed=seed)
    categories = np.asarray(item_category)[landing]  # [U, S]
    truth = data.ground_truth
    rows = []
    for b, u in enumerate(users.tolist()):
        hit = np.flatnonzero(merged[b] == int(data.sequences[u][-1]))
        rows.append({"user": u, "n_categories": len(set(categories[b].tolist())),
                     "rank": int(hit[0]) + 1 if len(hit) else None, "history": len(user_history(data, u)),
                     "since_drift": _since_drift(truth["user_interests"][u]) if truth is not None else None})
    noun = "samples" if model.denoises else "interests"
    ranked = "its samples rank the true next item" if model.denoises else "the true next item is ranked"
    hits = [r for r in rows if r["rank"] is not None]
    picks: list[tuple[int, str]] = []
    _pick(hits, picks, lambda r: (-r["n_categories"], r["rank"]),
          lambda r: f"its {noun} land on {r['n_categories']} different categories; {ranked} #{r['rank']}",
          where=lambda r: r["n_categories"] >= 2)
    _pick(hits, picks, lambda r: (r["n_categories"], r["rank"]),
          lambda r: (f"its {noun} agree on one category" if r["n_categories"] == 1 else
                     f"its {noun} land on only {r['n_categories']} categories") + f"; {ranked} #{r['rank']}")
    if truth is not None:
        _pick(rows, picks, lambda r: (r["rank"] is None, r["rank"] or 0),
              lambda r: "an interest changed " + ("just before the next item" if r["since_drift"] == 0 else
                                                  f"{r['since_drift']} steps before the next item"),
              where=lambda r: r["since_drift"] <= 3 and r["history"] >= 10)
    _pick(rows, picks, lambda r: -r["n_categories"],
          lambda r: f"a miss: the true next item is not in the top 50 (its {noun} land on {r['n_categories']} "
                    f"categor{'y' if r['n_categories'] == 1 else 'ies'})",
          where=lambda r: r["rank"] is None)
    return picks


def data_presets(data, users: np.ndarray, item_category: np.ndarray) -> list[tuple[int, str]]:
    """Up to four users worth opening first, picked from their histories alone (no model call: instant for any
    run): the most mixed history, the most single-minded, on planted a user whose interest just changed, and a
    user whose next item is of a category the history never touched. For runs without a presets.json."""
    item_category = np.asarray(item_category)
    truth = data.ground_truth
    rows = []
    for u in np.asarray(users).tolist():
        hist = user_history(data, u)
        cats = set(item_category[hist].tolist())
        rows.append({"user": u, "history": len(hist), "n_categories": len(cats),
                     "next_new": int(item_category[data.sequences[u][-1]]) not in cats,
                     "since_drift": _since_drift(truth["user_interests"][u]) if truth is not None else None})
    long = [r for r in rows if r["history"] >= min(10, data.max_len)] or rows
    picks: list[tuple[int, str]] = []
    _pick(long, picks, lambda r: -r["n_categories"],
          lambda r: f"its history mixes {r['n_categories']} categories", where=lambda r: r["n_categories"] >= 2)
    _pick(long, picks, lambda r: (r["n_categories"], -r["history"]),
          lambda r: "its history keeps to one category" if r["n_categories"] == 1 else
          f"its history keeps to {r['n_categories']} categories")
    if truth is not None:
        _pick(long, picks, lambda r: r["since_drift"],
              lambda r: "an interest changed " + ("just before the next item" if r["since_drift"] == 0 else
                                                  f"{r['since_drift']} steps before the next item"),
              where=lambda r: r["since_drift"] <= 3)
    _pick(long, picks, lambda r: -r["history"],
          lambda r: "a hard case: its next item is of a category its history never touched",
          where=lambda r: r["next_new"])
    return picks


def history_tensor(data, items) -> torch.Tensor:
    """A history (item ids, oldest first) as the model reads it: its last max_len items, left-padded, [1, L]."""
    from dimerec.data import left_pad

    items = np.asarray(items, dtype=np.int64)[-data.max_len:]
    return torch.from_numpy(left_pad([items], data.max_len, data.pad_id))


# ---- What if: the one-step mean's list, and what an edit of the history did ----------------------------------------

@torch.no_grad()
def mean_top(model, hist: torch.Tensor, k: int = 10, seed: int = 0, n_samples: int = 64,
             serve: ServeConfig = DEFAULT) -> np.ndarray | None:
    """The top-k of the one-step mean for histories [B, L] -> ids [B, k]: what `--serve mean` serves with
    `n_samples` random starts x_T averaged (dimerec.serving, the run's `serve` otherwise; the evaluator's list for
    that seed: `served_top`). x_T carries no information, so the average estimates E[x_0 | history]. None for a
    model without a one-step mean (its `serving_levers` lack "serve")."""
    if "serve" not in model.serving_levers:
        return None
    how = dataclasses.replace(lesson_servings(serve, 1)["mean"], serve_samples=n_samples)
    return served_top(model, hist, seed, k=k, serve=how)[0]


def edit_effect(before_interests: np.ndarray, after_interests: np.ndarray, before_top: np.ndarray,
                after_top: np.ndarray, item_category: np.ndarray, names: list[str],
                mean_after: np.ndarray | None = None) -> dict:
    """What an edit of a history did, in numbers and plain sentences.

    `*_interests`: each interest's nearest items [K, n] before and after the edit; `*_top`: the served top list
    (e.g. the top 10) before and after; `mean_after`: the one-step mean's list after the edit (`mean_top`), when
    shown. Returns {"moved": [(k, from, to)] (category ids of the interests whose leading category changed),
    "entered"/"left": {category id: items of it that entered/left the list}, "missed": the categories an interest
    moved to that the served list gained no item of, "mean_has": {category id: items of it in the mean's list},
    "sentence"}."""
    cats = np.asarray(item_category)
    was, now = dominant_categories(before_interests, cats), dominant_categories(after_interests, cats)
    moved = [(k, int(a), int(b)) for k, (a, b) in enumerate(zip(was, now)) if a != b]
    before, after = [int(i) for i in before_top], [int(i) for i in after_top]
    entered = _count(cats[[i for i in after if i not in before]])
    left = _count(cats[[i for i in before if i not in after]])
    missed = list(dict.fromkeys(to for _, _, to in moved if entered.get(to, 0) == 0))
    mean_has = {} if mean_after is None else _count(cats[np.asarray(mean_after, dtype=np.int64)])
    n = len(after)

    def items(counts: dict[int, int]) -> str:
        return ", ".join(f"{c} {names[i]}" for i, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    parts = [("; ".join(f"I{k + 1} moved from {names[a]} to {names[b]}" for k, a, b in moved) + ".") if moved else
             "Every interest keeps its leading category."]
    if entered:
        parts.append(f"Into the top {n} came {sum(entered.values())} item(s): {items(entered)}; out went "
                     f"{sum(left.values())}: {items(left)}.")
    else:
        parts.append(f"The top {n} holds the same items as before.")
    if missed:
        parts.append(f"The top {n} did not follow: no {' or '.join(names[c] for c in missed)} item entered it.")
        if mean_after is not None:
            parts.append("The one-step mean's top " + str(len(mean_after)) + " holds "
                         + ", ".join(f"{mean_has.get(c, 0)} {names[c]}" for c in missed) + " item(s).")
    return {"moved": moved, "entered": entered, "left": left, "missed": missed, "mean_has": mean_has,
            "sentence": " ".join(parts)}


def _count(categories: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(np.asarray(categories, dtype=np.int64), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


# ---- the item map: the item table in 2-D by UMAP, and a user's vectors placed on it by `transform` ------------------

MAP_STEPS = 5  # the chain's x̂0 guesses are placed at this many steps, evenly from step 0 to step T


@dataclass
class ItemMap:
    """A 2-D map of the item table (UMAP on the items' directions, cosine), and how to place new vectors on it."""
    reducer: object  # the fitted umap.UMAP
    items_2d: np.ndarray  # [n_items, 2] every item (the ones it was not fitted on placed by transform)
    fitted_on: int  # how many items the map was fitted on (all of them, or a seeded sample of a large catalogue)

    def place(self, vectors) -> np.ndarray:
        """[..., d] -> [..., 2]: UMAP's transform, which sets each new point among its nearest fitted items."""
        v = np.asarray(vectors, dtype=np.float32)
        flat = v.reshape(-1, v.shape[-1])
        return self.reducer.transform(flat).reshape(*v.shape[:-1], 2).astype(np.float32)


def fit_item_map(item_vectors, max_items: int = 2000, seed: int = 0, n_neighbors: int = 15) -> ItemMap:
    """UMAP of the item vectors [n, d] to 2-D, by cosine (what ranks an item is its direction and length, and the
    map shows the direction), seeded (so single-threaded and repeatable). A catalogue above `max_items` is fitted on
    a seeded sample of that many items and the rest placed by transform: about 2 s on 480 items once UMAP is
    compiled (its first use in a process compiles it: up to a minute on two busy cores)."""
    import umap  # slow to import (numba): only here

    x = np.asarray(item_vectors, dtype=np.float32)
    fit = np.arange(len(x))
    if len(x) > max_items:
        fit = np.sort(np.random.default_rng(seed).choice(len(x), max_items, replace=False))
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(fit) - 1), min_dist=0.9, metric="cosine",
                        random_state=seed, transform_seed=seed, init="spectral" if len(fit) > 20 else "random")
    placed = np.empty((len(x), 2), dtype=np.float32)
    placed[fit] = reducer.fit_transform(x[fit])
    rest = np.setdiff1d(np.arange(len(x)), fit)
    if len(rest):
        placed[rest] = reducer.transform(x[rest])
    return ItemMap(reducer=reducer, items_2d=placed, fitted_on=len(fit))


def map_steps(T: int, n: int = MAP_STEPS) -> np.ndarray:
    """The reverse steps whose x̂0 guesses the item map shows: n of 0..T, evenly, 0 and T kept."""
    return np.unique(np.round(np.linspace(0, T, min(n, T + 1))).astype(np.int64))


@torch.no_grad()
def map_vectors(model, hist: torch.Tensor, n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """What the item map places for one history [1, L]: its interests [K, d] and, for a model that denoises, the
    x̂0 guesses of `n_samples` reverse runs (seeded as `sample_user`, the samples the pages show) at `map_steps`
    [n_steps, S, d] — step T's is x_0 itself. The random start x_T is left out: see `fit_item_map`'s page."""
    interests = model.interests(hist)[0][0].numpy()
    if not model.denoises:
        return interests, None
    samples = sample_user(model, hist, n_samples=n_samples, seed=seed)
    return interests, samples.recommend[map_steps(samples.T)]
