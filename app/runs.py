"""Finding, loading and caching runs for the app. Presentation and caching only: every vector,
step and neighbour comes from `dimerec` (the model's own methods and `dimerec.explore`).

A run is a directory written by `python -m dimerec train` (config.json, best.pt, and the logs).
Runs are found in app/default_runs/ (built in, committed) and under runs/ (or $DIMEREC_RUNS).
A run's id, as it appears in the URL, is "default/NAME" or "runs/RELATIVE/PATH".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dimerec import explore
from dimerec.data import load_run_dataset, same_world
from dimerec.errors import DimeRecError
from dimerec.runs import (PRESETS_FILE, RUN_FILES, discover_runs as find_run_dirs, load_run as load_trained_run,
                          read_config as read_run_config, read_item_map, read_metrics as read_run_metrics,
                          read_losses as read_run_losses, read_presets, read_step_metrics as read_run_step_metrics,
                          read_valid as read_run_valid, runs_root, stored_lesson)
from dimerec.serving import ServeConfig, serving_of

torch.set_num_threads(1)  # small matrices; the machine's cores are shared

APP_DIR = Path(__file__).resolve().parent
DEFAULT_RUNS = APP_DIR / "default_runs"
DEFAULT_RUN_ID = "default/dimerec-planted"
NO_CATEGORY = "(no category)"
DEFAULT_SAMPLES = 6  # reverse samples per user that the pages show unless asked for more


class RunError(Exception):
    """A run that cannot be shown; the message says which file and what to do."""


def discover_runs() -> dict[str, Path]:
    """Run id -> directory: the built-in runs first, then every directory under runs/ that holds a config.json."""
    builtin = sorted(DEFAULT_RUNS.iterdir()) if DEFAULT_RUNS.is_dir() else []
    found = {f"default/{p.name}": p for p in builtin if (p / "config.json").is_file()}
    if DEFAULT_RUN_ID in found:  # the default first
        found = {DEFAULT_RUN_ID: found.pop(DEFAULT_RUN_ID), **found}
    for relative, path in find_run_dirs(runs_root()).items():
        found[f"runs/{relative.as_posix()}"] = path
    return found


def run_label(run_id: str, path: Path) -> str:
    """What the run selector shows: the run's name, and whether it is built in."""
    return f"{run_id.split('/', 1)[1]} (built-in)" if run_id.startswith("default/") else run_id


def run_summary(config: dict) -> str:
    """One line about a run's config: model, the settings that set it apart, dataset."""
    mc = config.get("model_config") or {}
    extra = []
    if config.get("model") in ("dimerec", "dimerec-nodiff"):
        if mc.get("preset") == "paper":
            extra.append("paper preset")
        if mc.get("grw") is False:
            extra.append("no GRW")
    return f"{config.get('model', '?')}{' (' + ', '.join(extra) + ')' if extra else ''} on {config.get('dataset', '?')}"


def _stamp(path: Path) -> tuple:
    """Changes when the run's files change, so a retrained run is reloaded."""
    return tuple((f, (path / f).stat().st_mtime_ns if (path / f).exists() else 0)
                 for f in (*RUN_FILES, PRESETS_FILE))


@dataclass
class Run:
    id: str
    path: Path
    config: dict  # config.json as dimerec.runs.read_config gives it
    model: torch.nn.Module
    serving: ServeConfig  # how the run was served (config.json's "serving"): every list the app shows follows it
    data: object  # dimerec.data.SeqDataset
    split: object  # dimerec.data.UserSplit
    metrics: dict | None
    step_metrics: dict | None
    categories: list[str]  # category names, most frequent first
    item_category: np.ndarray  # [n_items] index into categories (each item's first category)
    projection: explore.SphereProjection
    items_3d: np.ndarray  # [n_items, 3]
    held_out: np.ndarray  # held-out (validation and test) users with at least two items
    stamp: tuple  # the files' modification times: part of every cache key below
    agreement: tuple[float, float]  # share of items' 10 nearest neighbours sharing their category: picture, 64-d
    # the digest of the data and split as loaded (SeqDataset.fingerprint): runs on one world share the references
    # computed on it (popularity, the ceiling), so those are cached by it rather than by run
    world: str = ""

    @property
    def model_name(self) -> str:
        return self.config["model"]

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def has_diffusion(self) -> bool:
        return self.model.denoises

    @property
    def T(self) -> int:
        return int(self.config["model_config"].get("T", 0)) if self.has_diffusion else 0

    @property
    def is_planted(self) -> bool:
        return self.data.ground_truth is not None

    def title(self, item: int) -> str:
        return self.data.titles[item]

    def short_title(self, item: int) -> str:
        """The title without a leading "<category> · " (planted titles repeat their category)."""
        title, prefix = self.data.titles[item], f"{self.category(item)} · "
        return title[len(prefix):] if title.startswith(prefix) else title

    def categories_of(self, item: int) -> str:
        """All of the item's categories (MovieLens: its genres), for tables."""
        cats = self.data.item_categories[item] if self.data.item_categories else []
        return ", ".join(cats) if cats else NO_CATEGORY

    def category(self, item: int) -> str:
        return self.categories[self.item_category[item]]

    def history(self, user: int) -> np.ndarray:
        """The user's history: the last max_len items before the final one."""
        return explore.user_history(self.data, user)

    def next_item(self, user: int) -> int:
        """The user's true next item: the one that follows the history."""
        return int(self.data.sequences[user][-1])

    def hist_tensor(self, items) -> torch.Tensor:
        return explore.history_tensor(self.data, items)


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=4)
def _dataset(reading: str, data_dir: str | None):
    """`reading`: the JSON of what dimerec.data.load_run_dataset reads of a run's config (the cache's key)."""
    return load_run_dataset(json.loads(reading), data_dir)


def _load_dataset(config: dict, path: Path):
    """The run's dataset, read as the run read it: its split seed, its split (`--split given`: the source's own
    parts), and on `planted` its own world (a notebook's fast run has a smaller one)."""
    name, data_dir = config["dataset"], config.get("data_dir")
    if data_dir and not Path(data_dir).is_dir() and name != "planted":
        data_dir = None  # trained elsewhere: fall back to $DIMEREC_DATA, else ./data
    reading = {key: config[key] for key in ("dataset", "train_config", "planted_params", "dataset_stats")
               if key in config}
    try:
        return _dataset(json.dumps(reading, sort_keys=True), data_dir)
    except DimeRecError as err:
        raise RunError(f"{path} was trained on {name!r}, which cannot be read here: {err}. "
                       f"Set $DIMEREC_DATA to the folder that holds it.") from None


@st.cache_resource(show_spinner="Loading the run…", max_entries=8)
def _load(run_id: str, path_str: str, stamp: tuple) -> Run:
    path = Path(path_str)
    try:  # dimerec.runs reads and rebuilds every run; the app only turns its errors into what the page says
        config = read_run_config(path)
        recorded = (read_run_metrics(path, required=False), read_run_step_metrics(path, required=False))
    except DimeRecError as err:
        raise RunError(str(err)) from None
    data = _load_dataset(config, path)
    try:
        model, _, config = load_trained_run(path, data=data)
        serving = serving_of(model, config["serving"])
    except DimeRecError as err:
        raise RunError(str(err)) from None
    except Exception as err:  # a truncated file, an old config: all end here
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "; ".join(lines[:2])[:300]
        raise RunError(f"{path / 'best.pt'} cannot be loaded into a {config['model']} model "
                       f"({type(err).__name__}: {detail}). The model code may have changed since the run was "
                       f"trained: retrain it"
                       + (" (`python app/make_default_runs.py`)." if run_id.startswith("default/") else ".")) from None
    model.eval()
    item_vectors = model.item_vectors().detach()
    categories, item_category = explore.item_categories(data, NO_CATEGORY)
    projection = explore.fit_sphere_projection(item_vectors, item_category)
    items_3d = projection(item_vectors)
    agreement = (explore.neighbour_agreement(items_3d, item_category),
                 explore.neighbour_agreement(item_vectors.numpy(), item_category))
    split_seed = int(config.get("train_config", {}).get("split_seed", 0))
    split = data.split(split_seed)
    held_out = explore.held_out_users(data, split)
    return Run(id=run_id, path=path, config=config, model=model, serving=serving, data=data, split=split,
               metrics=recorded[0], step_metrics=recorded[1],
               categories=categories, item_category=item_category,
               projection=projection, items_3d=items_3d, held_out=held_out, stamp=stamp,
               agreement=agreement, world=data.fingerprint(split_seed)["digest"])


def load_run(run_id: str) -> Run:
    """The run with this id, loaded once per session of the server; RunError with a clear message if it cannot be."""
    runs = discover_runs()
    if run_id not in runs:
        raise RunError(f"no run {run_id!r}: the built-in runs are in {DEFAULT_RUNS}, others under {runs_root()}/")
    return _load(run_id, str(runs[run_id]), _stamp(runs[run_id]))


def read_losses(path: Path) -> pd.DataFrame | None:
    """losses.csv as a frame (dimerec.runs.read_losses), or None when the run has none; RunError when it is
    unreadable."""
    try:
        return read_run_losses(path, required=False)
    except DimeRecError as err:
        raise RunError(str(err)) from None


def read_valid(path: Path) -> pd.DataFrame | None:
    """valid.csv as a frame (dimerec.runs.read_valid), or None when the run has none or it is unreadable."""
    try:
        return read_run_valid(path)
    except DimeRecError:
        return None


def on_same_data(run: Run, path: Path) -> bool:
    """Whether the run in `path` trained on `run`'s data and split (dimerec.data.same_world), so its figures can be
    drawn against `run`'s references; False when its config.json is unreadable."""
    config = read_config(path)
    return bool(config) and same_world(config, run.config)


def read_step_metrics(path: Path) -> dict | None:
    """step_metrics.json, or None when missing or unreadable (the Steps page lists what it skipped)."""
    try:
        return read_run_step_metrics(path)
    except DimeRecError:
        return None


# ---- per-user read-outs, cached: moving a slider only slices these -------------------------------------------

@dataclass
class UserView:
    """Everything the pages show about one history, computed once."""
    hist: np.ndarray  # [n] item ids, oldest first (at most max_len)
    interests: np.ndarray  # [K, d]
    attention: np.ndarray | None  # [n, K] over the history items, or None
    interests_3d: np.ndarray  # [K, 3]
    interest_top: np.ndarray  # [K, 20] nearest items of each interest
    samples: explore.UserSamples | None  # None for a model without diffusion
    samples_3d: np.ndarray | None  # [T+1, S, 3] where x_t sits after k reverse steps
    recommend_3d: np.ndarray | None  # [T+1, S, 3] the x̂0 each sample would retrieve with
    top: np.ndarray  # [50] what the run serves this history: the evaluator's list (explore.served_top)
    top_scores: np.ndarray  # [50] their scores, merged as the run merges


@st.cache_data(show_spinner=False, max_entries=256)
@torch.no_grad()
def user_view(run_id: str, stamp: tuple, hist: tuple[int, ...], n_samples: int, seed: int) -> UserView:
    run = load_run(run_id)
    h = run.hist_tensor(hist)
    g, attention = run.model.interests(h)
    interest_top, _ = explore.nearest_items(g[0][:, None], run.model.item_vectors(), 20)
    samples = samples_3d = recommend_3d = None
    if run.has_diffusion:
        samples = explore.sample_user(run.model, h, n_samples=n_samples, seed=seed, serve=run.serving)
        samples_3d, recommend_3d = run.projection(samples.x_t), run.projection(samples.recommend)
    top, top_scores = explore.served_top(run.model, h, seed, serve=run.serving)
    n = min(len(hist), run.data.max_len)
    return UserView(hist=np.asarray(hist[-n:], dtype=np.int64), interests=g[0].numpy(),
                    attention=None if attention is None else attention[0, -n:].numpy(),
                    interests_3d=run.projection(g[0]), interest_top=interest_top,
                    samples=samples, samples_3d=samples_3d, recommend_3d=recommend_3d,
                    top=top[0], top_scores=top_scores[0])


def _stored_presets(run: Run) -> list[tuple[int, str]] | None:
    """The run's presets (dimerec.runs.read_presets: its presets.json, made from this very best.pt) when they name
    held-out users of this run; else None."""
    picks = read_presets(run.path)
    held_out = set(run.held_out.tolist())
    return picks if picks and all(u in held_out for u, _ in picks) else None


@st.cache_data(show_spinner=False, max_entries=16)
def _presets(run_id: str, stamp: tuple) -> list[tuple[int, str]]:
    run = load_run(run_id)
    stored = _stored_presets(run)
    if stored is not None:
        return stored
    return explore.data_presets(run.data, run.held_out, run.item_category)


def presets(run_id: str) -> list[tuple[int, str]]:
    """A few users worth opening first, each with the reason it was picked: the ones stored with the run (chosen by
    what its chains do, once, when the run was made), else ones chosen from the histories alone (instant)."""
    run = load_run(run_id)
    return _presets(run_id, run.stamp)


@st.cache_data(show_spinner=False, max_entries=8)
def popularity(run_id: str, stamp: tuple) -> np.ndarray:
    """How often each item occurs in the training users' sequences: [n_items]."""
    run = load_run(run_id)
    return run.data.item_popularity(run.split.train)


def is_no_grw(config: dict) -> bool:
    """A DimeRec run trained without the geodesic random walk (`--no-grw`)."""
    return config.get("model") == "dimerec" and (config.get("model_config") or {}).get("grw") is False


def read_config(path: Path) -> dict:
    """A run directory's config.json as dimerec.runs.read_config gives it, or {} when it is missing or unreadable
    (load_run says why)."""
    try:
        return read_run_config(path)
    except DimeRecError:
        return {}


def read_metrics(path: Path) -> dict:
    """A run directory's metrics.json, or {} when it has none or it is unreadable."""
    try:
        return read_run_metrics(path, required=False) or {}
    except DimeRecError:
        return {}


REFERENCE_KINDS = {
    "no-diffusion control": lambda c: c.get("model") == "dimerec-nodiff",
    "no GRW": is_no_grw,
}


ORACLE = "oracle (planted truth)"


def scored_rows(run: Run, part: str) -> tuple[np.ndarray, str, int | None, int]:
    """What the run's metrics on `part` ("valid" or "test") were scored on: the part's users, the protocol, the
    sampled row count (None: all rows) and the seed that sampled them; a reference level uses the same."""
    tc = run.config.get("train_config", {})
    rows = tc.get("valid_max_rows") if part == "valid" else tc.get("final_max_rows")
    return getattr(run.split, part), tc.get("protocol", "next-item"), rows, int(tc.get("seed", 0))


def ceiling(run_id: str, stamp: tuple, part: str = "valid") -> dict[str, float] | None:
    """On planted, the metrics on `part` of the oracle that ranks by the generator's own probabilities (the same
    rows as the run's metrics): the best any model can do there. None on other data."""
    run = load_run(run_id)
    _, protocol, rows, seed = scored_rows(run, part)
    return _oracle(run.world, part, protocol, rows, seed, run_id)


@st.cache_data(show_spinner="Computing the ceiling…", max_entries=16)
def _oracle(world: str, part: str, protocol: str, rows: int | None, seed: int, _run_id: str) -> dict | None:
    """The ceiling on one world's rows, computed once for every run on that world (`_run_id`: any one of them)."""
    run = load_run(_run_id)
    return explore.oracle_reference(run.data, scored_rows(run, part)[0], protocol, rows, seed)


@st.cache_data(show_spinner="Computing the popularity reference…", max_entries=16)
def _popularity_level(world: str, part: str, protocol: str, rows: int | None, seed: int,
                      _run_id: str) -> dict[str, float]:
    """MostPopular's metrics on one world's rows, computed once for every run on that world."""
    run = load_run(_run_id)
    return explore.popularity_reference(run.data, scored_rows(run, part)[0], run.split.train, protocol, rows, seed)


@st.cache_data(show_spinner="Computing the reference lines…", max_entries=16)
def reference_levels(run_id: str, stamp: tuple, part: str = "valid") -> dict[str, dict[str, float]]:
    """Metrics on `part` ("valid" or "test") to set a run beside, each read or computed from run files:
    popularity on the run's own rows of that part, and the metrics.json of a no-diffusion control and of a
    no-GRW DimeRec trained on the same dataset and split (the built-in ones first). The ceiling is `ceiling`."""
    run = load_run(run_id)
    _, protocol, rows, seed = scored_rows(run, part)
    levels = {"popularity": _popularity_level(run.world, part, protocol, rows, seed, run_id)}
    for other_id, path in discover_runs().items():
        config, valid = read_config(path), read_metrics(path).get(part)
        if not config:
            continue
        other = config.get("train_config", {})  # the same world (data digest: items, sequences, split seed)
        same_data = same_world(config, run.config) and other.get("protocol", "next-item") == protocol
        for label, matches in REFERENCE_KINDS.items():
            if other_id != run_id and same_data and matches(config) and label not in levels and valid:
                levels[label] = valid
    return levels


@dataclass
class MapView:
    """One user on the item map (explore.fit_item_map): every item, the history, the interests and the chain's x̂0
    guesses at `steps`, in the map's 2-D coordinates."""
    items_2d: np.ndarray  # [n_items, 2]
    interests_2d: np.ndarray  # [K, 2]
    guesses_2d: np.ndarray | None  # [n_steps, S, 2]; None for a model without diffusion
    steps: np.ndarray  # [n_steps] the reverse steps of the guesses (the last is T: x_0 itself)
    fitted_on: int  # items the map was fitted on
    stored: bool  # read from the run's item_map.npz (made with the run), else fitted here


@st.cache_data(show_spinner=False, max_entries=8)
def _stored_map(run_id: str, stamp: tuple) -> dict | None:
    """The run's item map as arrays (dimerec.runs.read_item_map: its item_map.npz, written by
    app/make_default_runs.py from this very best.pt); else None."""
    return read_item_map(load_run(run_id).path)


def has_item_map(run: Run) -> bool:
    """Whether the item map can be drawn at once: stored with the run, or already fitted in this server."""
    return _stored_map(run.id, run.stamp) is not None or (run.id, run.stamp) in _FITTED_MAPS


_FITTED_MAPS: set[tuple] = set()  # (run id, stamp) of the maps fitted in this server (the cache below holds them)


@st.cache_resource(show_spinner="Fitting the item map (UMAP): once per run…", max_entries=4)
def _fitted_map(run_id: str, stamp: tuple) -> explore.ItemMap:
    run = load_run(run_id)
    fitted = explore.fit_item_map(run.model.item_vectors().detach().numpy())
    _FITTED_MAPS.add((run_id, stamp))
    return fitted


@st.cache_data(show_spinner=False, max_entries=64)
def map_view(run_id: str, stamp: tuple, user: int) -> MapView:
    """The user on the item map, with the samples the pages show (DEFAULT_SAMPLES, seed 0): read from the run's
    item_map.npz when it holds the user, else placed here (fitting the map first if this server has not)."""
    run = load_run(run_id)
    stored = _stored_map(run_id, stamp)
    if stored is not None and user in set(stored["users"].tolist()):
        b = int(np.flatnonzero(stored["users"] == user)[0])
        guesses = stored["guesses_2d"][b].astype(np.float32) if stored["guesses_2d"].size else None
        return MapView(items_2d=stored["items_2d"], interests_2d=stored["interests_2d"][b].astype(np.float32),
                       guesses_2d=guesses, steps=stored["steps"], fitted_on=int(stored["fitted_on"]), stored=True)
    item_map = _fitted_map(run_id, stamp)
    interests, guesses = explore.map_vectors(run.model, run.hist_tensor(run.history(user)), DEFAULT_SAMPLES, 0)
    return MapView(items_2d=item_map.items_2d, interests_2d=item_map.place(interests),
                   guesses_2d=None if guesses is None else item_map.place(guesses),
                   steps=explore.map_steps(run.T) if run.has_diffusion else np.zeros(0, dtype=np.int64),
                   fitted_on=item_map.fitted_on, stored=False)


def below_popularity(run: Run) -> tuple[float, float] | None:
    """(the run's test HR@50, MostPopular's on the same test rows) when the run ranks below popularity, else None:
    both read or computed from the run's files (metrics.json, reference_levels)."""
    ours = ((run.metrics or {}).get("test") or {}).get("HR@50")
    if ours is None:
        return None
    pop = reference_levels(run.id, run.stamp, "test")["popularity"].get("HR@50")
    return (ours, pop) if pop is not None and ours < pop else None


@st.cache_data(show_spinner=False, max_entries=64)
def mean_list(run_id: str, stamp: tuple, hist: tuple[int, ...], seed: int, k: int = 10) -> np.ndarray | None:
    """The one-step mean's top k for a history (explore.mean_top, at the run's serving): [k] item ids; None for a
    model without a one-step mean."""
    run = load_run(run_id)
    top = explore.mean_top(run.model, run.hist_tensor(hist), k, seed, serve=run.serving)
    return None if top is None else top[0]


@st.cache_data(show_spinner=False, max_entries=64)
@torch.no_grad()
def forward_view(run_id: str, stamp: tuple, item: int, n_paths: int) -> tuple[np.ndarray, np.ndarray]:
    """The forward noise of one item, on the picture [T+1, n, 3], and each path's angle from x_0 in degrees [T+1, n]."""
    run = load_run(run_id)
    x0 = run.model.item_vectors()[item].detach()
    paths = explore.forward_paths(run.model, x0, n_paths)
    return run.projection(paths), explore.angle_to(paths, x0)


# ---- the "sample or mean?" lesson --------------------------------------------------------------------------------
def has_lesson(run: Run) -> bool:
    """Whether the run can be served both ways the lesson compares (a one-step mean and a mixture of chains)."""
    return "serve" in run.model.serving_levers and "serve_merge" in run.model.serving_levers


@st.cache_data(show_spinner="Scoring the mean and the mixtures of 1 to 64 samples on the validation users (once: "
                            "the result is kept in the run's folder)…", max_entries=8)
def lesson_scores(run_id: str, stamp: tuple) -> dict | None:
    """The lesson's numbers for a run (dimerec.runs.stored_lesson: its folder's sample_or_mean.json, computed there
    once), None for a run that cannot be served both ways."""
    run = load_run(run_id)
    if not has_lesson(run):
        return None
    return stored_lesson(run.path, run.model, run.data, run.config, run.serving)


@st.cache_data(show_spinner=False, max_entries=512)
@torch.no_grad()
def lesson_lists(run_id: str, stamp: tuple, hist: tuple[int, ...], n_samples: int, seed: int,
                 k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One history's top k ranked by the one-step mean and by the mixture of `n_samples` chains (the evaluator's
    lists for that history and seed: explore.served_top)."""
    run = load_run(run_id)
    ways = explore.lesson_servings(run.serving, n_samples)
    h = run.hist_tensor(hist)
    mean, _ = explore.served_top(run.model, h, seed, k=k, serve=ways["mean"])
    mixture, _ = explore.served_top(run.model, h, seed, k=k, serve=ways["mixture"])
    return mean[0], mixture[0]
