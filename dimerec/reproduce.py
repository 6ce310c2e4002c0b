"""`python -m dimerec reproduce NAME --dataset D`: train a set of models over seeds, test once, tabulate.

Runs go to `runs/reproduce/<dataset>/<run name>/seed<N>/`; a run whose metrics.json
exists is skipped, so an interrupted reproduction resumes where it stopped, and
experiments that share a configuration share its runs (Table 4's full model is
the DimeRec row of the `dimerec` experiment, Fig. 4 reads Table 4's runs, ...).
Every table (`results/<name>_<dataset>.md` and `.csv`) gives mean ± std over seeds
of the test metrics, names the protocol and the budget, and, where the experiment
has baselines, compares DimeRec with the best of them by a paired t-test over seeds.
Every experiment also writes a figure (`.png` and interactive `.html`).

With `--tune`, each model first gets the same small grid search on validation
(learning rate and at most two of its own settings, `TUNING`), on seed 0, with the
same budget, without reading the test split; the final runs use the best setting.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dimerec.errors import DimeRecError
from dimerec.runs import finished

REPORTED = ("HR@10", "HR@20", "HR@50", "NDCG@10", "NDCG@20", "NDCG@50")


@dataclass
class RunSpec:
    label: str  # the row of the table
    model: str
    flags: list[str] = field(default_factory=list)
    role: str = "baseline"  # "ours" (compared), "baseline", "floor", "control" or "variant"
    run_name: str | None = None  # the run folder (default: from the label); equal names share runs
    serve_of: str | None = None  # evaluate this run's checkpoint (by run name) instead of training
    serve_overrides: dict = field(default_factory=dict)  # model-config fields changed for serving only

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", (self.run_name or self.label).lower()).strip("-")


OURS = RunSpec("DimeRec (ours)", "dimerec", ["--preset", "ours"], role="ours")
PAPER = RunSpec("DimeRec (paper)", "dimerec", ["--preset", "paper"], role="variant")
CONTROL = RunSpec("no-diffusion control", "dimerec-nodiff", role="control")
POP = RunSpec("MostPopular", "pop", role="floor")
COMIREC_SA = RunSpec("ComiRec-SA", "comirec-sa")


def dimerec_variant(label: str, flags: list[str], base: RunSpec = OURS, **kwargs) -> RunSpec:
    """A DimeRec row that changes `flags` from `base`; with no flags it is `base`'s own run."""
    kwargs.setdefault("run_name", None if flags else base.label)
    return RunSpec(label, "dimerec", [*base.flags, *flags], role="variant", **kwargs)


def ablations(base: RunSpec) -> list[RunSpec]:
    name = base.label
    return [dimerec_variant(f"{name} full", [], base),
            dimerec_variant(f"{name} w/o L_gem", ["--gem-weight", "0"], base),
            dimerec_variant(f"{name} w/o L_recon", ["--lambda-recon", "0"], base),
            dimerec_variant(f"{name} w/o L_ssm", ["--mu-ssm", "0"], base),
            dimerec_variant(f"{name} w/o GRW", ["--no-grw"], base)]


def sweep(symbol: str, flag: str, values: list, default) -> list[RunSpec]:
    return [dimerec_variant(f"{symbol} = {v}", [], run_name=OURS.label) if v == default else  # the default: ours
            dimerec_variant(f"{symbol} = {v}", [flag, str(v)], run_name=f"ours {flag.lstrip('-')} {v}")
            for v in values]


def served(label: str, source: RunSpec, **overrides) -> RunSpec:
    """A row scoring `source`'s checkpoints with serving-only settings changed (no training)."""
    return RunSpec(label, source.model, role="variant", serve_of=source.label, serve_overrides=overrides)


# Issue 16: the levers on DimeRec's reverse chain, one table per hypothesis (the section reads DIFFUSION_GROUPS).
CFG = dimerec_variant("ours + CFG training (p = 0.15), w = 0", ["--p-uncond", "0.15"])
XATTN = dimerec_variant("ours, cross-attention denoiser", ["--denoiser", "cross-attention"])
SERVE_MEAN = RunSpec("DimeRec (ours, serve mean)", "dimerec", role="variant", serve_of=OURS.label,
                     serve_overrides={"serve": "mean"})
DIFFUSION_GROUPS: dict[str, list[RunSpec]] = {
    "References": [POP, CONTROL, OURS, SERVE_MEAN],
    "H1: classifier-free guidance (trained with p = 0.15, served with weight w)": [
        CFG, *(served(f"ours + CFG, w = {w}", CFG, guidance_weight=w) for w in (0.5, 1.0, 2.0, 4.0))],
    "H2: S samples merged as a predictive distribution (mixture at the model's L_ssm scale) or by max": [
        *(served(f"ours, S = {s}, max", OURS, serve_samples=s) for s in (4, 16)),
        *(served(f"ours, S = {s}, mixture", OURS, serve_samples=s, serve_merge="mixture") for s in (1, 4, 16))],
    "H3: a partial chain from the model's own guess (x̂0 at t = T) noised to t*": [
        *(served(f"ours, t* = {t}", OURS, serve_start=t) for t in (2, 5, 10, 15)),
        served("ours, t* = 5 from each interest, S = 4", OURS, serve_start=5, serve_guess="interests",
               serve_samples=4)],
    "H4: a denoiser that reads each interest (cross-attention over the K interests)": [XATTN],
    "H1 + H2, H1 + H3: the strongest levers combined": [
        served("ours + CFG w = 4, S = 16, mixture", CFG, guidance_weight=4.0, serve_samples=16,
               serve_merge="mixture"),
        served("ours + CFG w = 4, t* = 5 from each interest, S = 4", CFG, guidance_weight=4.0, serve_start=5,
               serve_guess="interests", serve_samples=4)],
}

TABLE1 = [POP,
          RunSpec("SASRec", "sasrec"),
          RunSpec("GRU4Rec", "gru4rec"),
          RunSpec("MIND", "mind"),
          COMIREC_SA,
          RunSpec("ComiRec-DR", "comirec-dr"),
          RunSpec("Mult-VAE", "multvae"),
          RunSpec("DreamRec", "dreamrec"),
          RunSpec("DiffuRec", "diffurec"),
          OURS]

EXPERIMENTS: dict[str, list[RunSpec]] = {
    # issue 3: DimeRec as written, as decided (and served by its one-step mean), the control, its GEM alone
    "dimerec": [POP, COMIREC_SA, PAPER, OURS,
                RunSpec("DimeRec (ours, serve mean)", "dimerec", role="variant", serve_of=OURS.label,
                        serve_overrides={"serve": "mean"}),
                CONTROL],
    # the paper's Table 1: the seven baselines and DimeRec, MostPopular as the floor
    "table1": TABLE1,
    # Table 2 reads the Table 1 runs: linear probing of item embeddings, categories in the top 100
    "table2": TABLE1,
    # Table 3: the guidance extractor swapped
    "table3": [dimerec_variant("GEM = SASRec", ["--gem", "sasrec"]),
               dimerec_variant("GEM = MLP", ["--gem", "mlp"]),
               dimerec_variant("GEM = ComiRec-DR", ["--gem", "comirec-dr"]),
               dimerec_variant("GEM = ComiRec-SA", []),
               CONTROL],
    # Table 4: each loss and the geodesic random walk removed, for both presets, the control beside;
    # Fig. 3: linear probing of the item table after the paper's cumulative ablations (variants 1-4)
    "table4": [*ablations(OURS), *ablations(PAPER), CONTROL,
               dimerec_variant("Fig. 3 variant 2: w/o L_gem, L_recon", ["--gem-weight", "0", "--lambda-recon", "0"]),
               dimerec_variant("Fig. 3 variant 3: w/o L_gem, L_recon, GRW",
                               ["--gem-weight", "0", "--lambda-recon", "0", "--no-grw"]),
               dimerec_variant("Fig. 3 variant 4: w/o L_gem, L_ssm", ["--gem-weight", "0", "--mu-ssm", "0"])],
    # Fig. 4: the loss curves with and without GRW (Table 4's runs)
    "fig4": [dimerec_variant("with GRW", []),
             dimerec_variant("without GRW", ["--no-grw"], run_name="DimeRec (ours) w/o GRW")],  # Table 4's runs
    # Fig. 5: HR@50 of x̂0 at every reverse step (the `dimerec` experiment's runs)
    "fig5": [PAPER, OURS],
    # Tables 5, 7, 8: sensitivity to T, λ and μ
    "table5": sweep("T", "--T", [5, 10, 20, 50, 100], 20),
    "table7": sweep("λ", "--lambda-recon", [0.01, 0.1, 1, 10], 0.1),
    "table8": sweep("μ", "--mu-ssm", [0.1, 1, 10, 100], 1),
    # issue 16: can the reverse chain earn its place? (results/DIFFUSION.md explains the tables)
    "diffusion": [spec for group in DIFFUSION_GROUPS.values() for spec in group],
}

# experiments where models of different papers meet: their tables say how each model's settings were chosen
COMPARES_PAPERS = {"table1", "table2"}

DESCRIPTIONS = {
    "dimerec": "DimeRec presets, its one-step-mean serving, the no-diffusion control, ComiRec-SA, MostPopular",
    "table1": "all eight models and MostPopular (Table 1)",
    "table2": "Table 1's runs: linear probing of item embeddings on categories, distinct categories in the top 100",
    "table3": "DimeRec with its GEM swapped: SASRec, MLP, ComiRec-DR, ComiRec-SA",
    "table4": "ablations: without L_gem, L_recon, L_ssm or GRW, for both presets, the control; "
              "Fig. 3's linear probing of the item table after the cumulative ablations",
    "fig4": "the three loss curves with and without the geodesic random walk",
    "fig5": "HR@50 of the intermediate x̂0 at every reverse step, paper and ours",
    "table5": "diffusion steps T in {5, 10, 20, 50, 100}",
    "table7": "λ (weight of L_recon) in {0.01, 0.1, 1, 10}",
    "table8": "μ (weight of L_ssm) in {0.1, 1, 10, 100}",
    "diffusion": "levers on DimeRec's reverse chain (guidance, samples, partial chains, denoiser), the control "
                 "and the one-step mean beside: per-step curves, serving cost, chain angles",
}

# Equal tuning for Table 1: the learning rate and at most two of each model's own settings.
TUNING: dict[str, dict[str, list]] = {
    # SASRec: the DimeRec paper's sampled softmax on the last position, or the official BCE on every position
    # (on ML-1M, lr 0.005 with the former stays at popularity level; see dimerec/models/sasrec.py)
    "sasrec": {"--lr": [0.001, 0.005], "--loss-kind": ["ssm", "bce-all-positions"]},
    "gru4rec": {"--lr": [0.001, 0.005], "--dropout-hidden": [0.0, 0.25]},
    "mind": {"--lr": [0.001, 0.005], "--routing-iterations": [1, 3]},
    "comirec-sa": {"--lr": [0.001, 0.005], "--n-negatives": [10, 50]},
    "comirec-dr": {"--lr": [0.001, 0.005], "--routing-iterations": [1, 3]},
    # inert within a 3,000-step budget (β = step / 200,000 stays under 0.015, below either cap): kept so the
    # committed tables reproduce; --total-anneal-steps would be the axis that acts
    "multvae": {"--lr": [0.001, 0.005], "--anneal-cap": [0.2, 1.0]},
    "dreamrec": {"--lr": [0.001, 0.005], "--guidance-weight": [0.0, 2.0], "--retrieval": ["dot", "l2"]},
    "diffurec": {"--lr": [0.001, 0.005], "--dropout": [0.1, 0.3]},
    "dimerec": {"--lr": [0.001, 0.005], "--lambda-recon": [0.1, 1.0]},
}


def grid(model: str) -> list[list[str]]:
    space = TUNING.get(model, {})
    return [[item for pair in zip(space, values) for item in map(str, pair)]
            for values in itertools.product(*space.values())]


def _train(argv: list[str], out: Path) -> None:
    """Train one run as `python -m dimerec ARGV` would (ARGV starts with "train"), through dimerec.options."""
    from dimerec.options import train_from_argv

    assert argv[0] == "train", argv
    try:
        train_from_argv(argv[1:])
    except SystemExit as exit_:  # argparse's one-line error for a bad flag in an experiment's spec
        raise DimeRecError(f"run {out}: its flags {' '.join(argv[1:])} were refused") from exit_
    except DimeRecError as err:
        raise DimeRecError(f"run {out} failed ({err}); rerun to resume the rest") from None


@dataclass
class Budget:
    """What every run of an experiment gets: minutes of wall clock, optionally a step cap, and the rows
    its final metrics are computed on (all, or a seeded subsample shared by every model of a seed)."""
    minutes: float
    steps: int | None = None
    final_rows: int | None = None

    def flags(self) -> list[str]:
        return (["--max-minutes", str(self.minutes)] + (["--max-steps", str(self.steps)] if self.steps else [])
                + (["--final-max-rows", str(self.final_rows)] if self.final_rows else []))

    def __str__(self) -> str:
        text = f"trained for at most {self.minutes:g} minutes" + (f" and {self.steps} steps" if self.steps else "")
        return text + (f", scored on {self.final_rows} sampled rows" if self.final_rows else "")

    def check(self, out: Path) -> None:
        """A finished run is reused only if this budget would train it the same (a served run: its source's):
        the same step cap and scored rows, and the same wall clock, or a longer one where the run stopped before
        its clock ran out (then it stopped on its steps or on validation, and a longer clock trains it identically)."""
        if not (out / "config.json").exists():
            out = Path(json.loads((out / "metrics.json").read_text())["served_from"])
        used = json.loads((out / "config.json").read_text())["train_config"]
        had = Budget(used.get("max_minutes"), used.get("max_steps"), used.get("final_max_rows"))
        trained_minutes = json.loads((out / "metrics.json").read_text())["train_minutes"]
        longer_clock = had.minutes is not None and (self.minutes is None or self.minutes > had.minutes)
        stopped_before_clock = had.minutes is None or trained_minutes < had.minutes
        if had != self and not (replace(had, minutes=self.minutes) == self and longer_clock and stopped_before_clock):
            raise DimeRecError(f"{out} was {had}, not {self}; a run is reused under the same budget (or a longer "
                               f"--max-minutes, if it stopped before its clock), else use another --runs folder")


def train_flags(dataset: str, seed: int, out: Path, budget: Budget, data_dir: str | None,
                extra: list[str]) -> list[str]:
    argv = ["--dataset", dataset, "--seed", str(seed), "--out", str(out), *budget.flags(),
            "--quiet", "--overwrite", *extra]
    return argv + (["--data-dir", data_dir] if data_dir else [])


def load_run_cached(run: Path, data_dir: str | None, overrides: dict | None = None):
    """trainer.load_run, once per run and serving overrides within one `reproduce` call (Table 2 reads each run
    twice); reproduce() empties the cache when it starts."""
    from dimerec.runs import load_run

    key = (str(run), data_dir, json.dumps(overrides or {}, sort_keys=True))
    if key not in _LOADED:
        _LOADED[key] = load_run(run, data_dir, overrides)
    return _LOADED[key]


_LOADED: dict[tuple, tuple] = {}


def trained_run(result: dict) -> Path:
    """The directory holding a result's weights and training logs (a served run's source)."""
    return Path(result.get("served_from") or result["run"])


def serve_run(source: Path, out: Path, overrides: dict, data_dir: str | None, device: str = "cpu") -> None:
    """metrics.json of `source`'s checkpoint served with `overrides` (same weights, same rows), scored on `device`."""
    from dimerec.runs import write_json_atomic
    from dimerec.trainer import final_metrics, use_device

    model, data, config = load_run_cached(source, data_dir, overrides)
    try:
        model.to(use_device(device))
        valid, test = final_metrics(model, data, config["train_config"])  # the rows the source was scored on
    finally:
        model.cpu()  # the cached model stays on the CPU for the tables' analyses
    trained = json.loads((source / "metrics.json").read_text())
    metrics = {**trained, "served_from": str(source), "serve_overrides": overrides, "valid": valid, "test": test}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, out / "metrics.json")


def flags_slug(flags: list[str]) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", " ".join(flags).lower()).strip("-")


def tuning_run(root: Path, dataset: str, spec: RunSpec, flags: list[str]) -> Path:
    return root / dataset / "tune" / spec.slug / flags_slug(flags)


def tune(specs: list[RunSpec], dataset: str, *, data_dir: str | None, root: Path, budget: Budget,
         extra_flags: list[str]) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """Grid search on validation HR@50 (seed 0, no test read). Returns the chosen flags per label, and all trials."""
    jobs = [(spec, flags) for spec in specs if spec.serve_of is None for flags in grid(spec.model)]
    rows, chosen = [], {}
    for spec, flags in jobs:  # a finished run is reused only if it had this budget
        if finished(out := tuning_run(root, dataset, spec, flags)):
            budget.check(out)

    def trial(spec: RunSpec, flags: list[str]) -> Job:
        out = tuning_run(root, dataset, spec, flags)
        argv = ["train", "--model", spec.model, *spec.flags, *flags,
                *train_flags(dataset, 0, out, budget, data_dir, ["--no-read-test", *extra_flags])]
        return Job(out, lambda: _train(argv, out), f"{spec.label}, {' '.join(flags)}", model=spec.label)

    train_all([trial(spec, flags) for spec, flags in jobs], desc="tuning")
    for spec, flags in jobs:
        valid = json.loads((tuning_run(root, dataset, spec, flags) / "metrics.json").read_text())["valid"]
        rows.append({"model": spec.label, "setting": " ".join(flags), "valid HR@50": 100 * valid["HR@50"],
                     "valid NDCG@50": 100 * valid["NDCG@50"]})
    trials = pd.DataFrame(rows)
    for spec in specs:
        mine = trials[trials.model == spec.label] if len(trials) else trials
        if len(mine):
            chosen[spec.label] = mine.loc[mine["valid HR@50"].idxmax(), "setting"].split()
    if len(trials):
        trials["chosen"] = [chosen.get(r.model) == r.setting.split() for r in trials.itertuples()]
    return chosen, trials


class RunLock:
    """`out/../seedN.lock` while a process trains run `out`, so reproductions running side by side share a runs
    folder: a run locked by a live process is passed over, not trained twice; a dead process's lock is taken over.
    The lock holds the owner's pid and start time, so a pid reused by another process (a new machine) is not
    mistaken for the owner."""

    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".lock")

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if self._owner_alive():
                return False
            self.path.unlink(missing_ok=True)  # a stale lock
            return self.acquire()
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {process_start(os.getpid()) or ''}")
        return True

    def _owner_alive(self) -> bool:
        try:
            text = self.path.read_text()
            if not text:  # its owner is between creating and writing it, unless that was long ago
                return time.time() - self.path.stat().st_mtime < 60
            pid, *started = text.split()
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError, FileNotFoundError):
            return False
        except PermissionError:  # alive, another user's
            return True
        return not started or process_start(int(pid)) in (None, started[0])

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); None without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class Job:
    """One run to produce: `train` writes `out/metrics.json`; `after` is a run that must finish first
    (a serving variant's source); `model` names the runs whose mean duration estimates this one's (None: a run
    only served, which costs next to nothing)."""
    out: Path
    train: Callable[[], None]
    label: str
    model: str | None = None
    after: Path | None = None


def train_all(jobs: list[Job], desc: str, poll_seconds: float = 5.0) -> None:
    """Produce every job's run, in order, unless it is finished. A run that another live process is training
    (or whose `after` run is not finished) is passed over and come back to, so reproductions started side by side
    share the work instead of queueing on one run. Returns when every run is finished."""
    bar = tqdm(total=len(jobs), desc=desc, unit="run")
    durations: dict[str, list[float]] = {}
    pending = list(jobs)
    while pending:
        deferred = []
        for job in pending:
            if not finished(job.out):
                lock = RunLock(job.out)
                if (job.after is not None and not finished(job.after)) or not lock.acquire():
                    deferred.append(job)
                    continue
                bar.set_description(job.label)
                started = time.perf_counter()
                try:
                    if not finished(job.out):
                        job.train()
                finally:
                    lock.release()
                if job.model is not None:
                    durations.setdefault(job.model, []).append(time.perf_counter() - started)
                    left = pending[pending.index(job) + 1:] + deferred
                    bar.set_postfix_str(f"~{minutes_left(left, durations):.0f} min left")
            bar.update()
        if len(deferred) == len(pending):  # nothing could start: wait for the other processes
            time.sleep(poll_seconds)
        pending = deferred
    bar.close()


def minutes_left(jobs: list[Job], durations: dict[str, list[float]]) -> float:
    """Estimated minutes for the jobs still to train: each at its model's mean duration so far (the mean of all
    trained runs for a model not yet seen); finished runs and runs only served cost nothing."""
    overall = np.mean([d for ds in durations.values() for d in ds])
    return sum(np.mean(durations.get(job.model, [overall])) for job in jobs
               if job.model is not None and not finished(job.out)) / 60


def run_all(specs: list[RunSpec], dataset: str, seeds: list[int], *, data_dir: str | None, root: Path,
            budget: Budget, extra_flags: list[str], chosen: dict[str, list[str]] | None = None,
            reuse: dict[str, Path] | None = None, device: str = "cpu") -> list[dict]:
    """Train (or reuse) every spec at every seed. `reuse` maps a label to the tuning run that trained its
    seed 0 with the chosen flags and the same budget: that run is scored on test instead of trained again.
    `device` scores the served runs (extra_flags's --device trains the others)."""
    chosen, reuse = chosen or {}, reuse or {}
    jobs = [(spec, seed) for spec in specs for seed in seeds]
    # a serving variant needs its source trained first
    jobs.sort(key=lambda job: job[0].serve_of is not None)
    results = []

    def run_dir(spec: RunSpec, seed: int) -> Path:
        if chosen.get(spec.label):  # the chosen setting names the folder: a new choice never reuses an old run
            return root / dataset / spec.slug / flags_slug(chosen[spec.label]) / f"seed{seed}"
        return root / dataset / spec.slug / f"seed{seed}"

    for spec, seed in jobs:  # a finished run is reused only if it had this budget
        if spec.serve_of is None and finished(run_dir(spec, seed)):
            budget.check(run_dir(spec, seed))

    def job(spec: RunSpec, seed: int) -> Job:
        out, label = run_dir(spec, seed), f"{spec.label}, seed {seed}"
        if spec.serve_of is not None:
            source = run_dir(next(s for s in specs if s.label == spec.serve_of), seed)
            return Job(out, lambda: serve_run(source, out, spec.serve_overrides, data_dir, device), label,
                       after=source)
        if seed == 0 and spec.label in reuse:  # the chosen tuning run is this very run, test unread
            return Job(out, lambda: serve_run(reuse[spec.label], out, {}, data_dir, device), label)
        argv = ["train", "--model", spec.model, *spec.flags, *chosen.get(spec.label, []),
                *train_flags(dataset, seed, out, budget, data_dir, extra_flags)]
        return Job(out, lambda: _train(argv, out), label, model=spec.label)

    train_all([job(spec, seed) for spec, seed in jobs], desc="reproduce")
    for spec, seed in jobs:
        out = run_dir(spec, seed)
        metrics = json.loads((out / "metrics.json").read_text())
        results.append({"label": spec.label, "role": spec.role, "seed": seed, "run": str(out), **metrics})
    order = {spec.label: i for i, spec in enumerate(specs)}
    return sorted(results, key=lambda r: (order[r["label"]], r["seed"]))


def summarize(results: list[dict]) -> tuple[pd.DataFrame, str]:
    """Mean ± std of test metrics per model, in %; plus a paired t-test of ours vs the best baseline."""
    from scipy import stats

    rows = []
    for label, group in pd.DataFrame(results).groupby("label", sort=False):
        tests = pd.DataFrame(list(group["test"]))
        row = {"model": label, "role": group["role"].iloc[0], "seeds": len(group),
               "train_minutes": float(group["train_minutes"].mean()), "steps": float(group["steps"].mean())}
        for key in REPORTED:
            row[key] = 100 * tests[key].mean()
            row[f"{key} std"] = 100 * tests[key].std(ddof=1) if len(tests) > 1 else 0.0
        rows.append(row)
    table = pd.DataFrame(rows)
    baselines = table[table.role == "baseline"]
    note = ""
    ours = table[table.role == "ours"]
    if len(baselines) and len(ours):
        best = baselines.loc[baselines["HR@50"].idxmax(), "model"]
        table["best baseline"] = table["model"] == best
        by_seed = pd.DataFrame(results)
        a = by_seed[by_seed.label == ours["model"].iloc[0]].sort_values("seed")
        b = by_seed[by_seed.label == best].sort_values("seed")
        seeds = sorted(set(a.seed) & set(b.seed))
        if len(seeds) >= 2:
            x = [t["HR@50"] for t in a[a.seed.isin(seeds)]["test"]]
            y = [t["HR@50"] for t in b[b.seed.isin(seeds)]["test"]]
            p = stats.ttest_rel(x, y).pvalue
            note = (f"Paired t-test over {len(seeds)} seeds, test HR@50, {ours['model'].iloc[0]} vs {best}: "
                    f"mean difference {100 * (np.mean(x) - np.mean(y)):+.2f} points, p = {p:.3g}.")
    return table, note


def markdown_table(frame: pd.DataFrame, floats: str = "{:.2f}") -> list[str]:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return lines


def metric_lines(table: pd.DataFrame) -> list[str]:
    cells = pd.DataFrame({"model": [f"{m}{' ★' if b else ''}" for m, b in
                                    zip(table["model"], table.get("best baseline", [False] * len(table)))],
                          "seeds": table["seeds"]})
    for key in REPORTED:
        cells[key] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(table[key], table[f"{key} std"])]
    cells["train min"] = [f"{v:.1f}" for v in table["train_minutes"]]
    cells["steps"] = [f"{v:.0f}" for v in table["steps"]]
    return markdown_table(cells)


def write_outputs(name: str, dataset: str, results: list[dict], table: pd.DataFrame, sections: list[str],
                  figure, out_dir: Path, command: str, budget: Budget, tuned: bool = False) -> Path:
    from dimerec import figures

    protocol = results[0]["protocol"]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{name}_{dataset}"
    table.assign(protocol=protocol, dataset=dataset).to_csv(stem.with_suffix(".csv"), index=False)
    settings = ""
    if tuned or name in COMPARES_PAPERS:
        settings = (" Settings: each model's best trial of the grid on validation (Tuning, below)." if tuned else
                    " Settings: every model at its defaults, untuned (no `--tune`).")
    lines = [f"# {name} on {dataset}: {DESCRIPTIONS[name]}", "",
             f"Test split, {protocol} protocol, already-seen items {'masked' if results[0]['mask_seen'] else 'kept'}; "
             f"values in %, mean ± std over seeds; each run {budget}, "
             f"selected on validation HR@50.{settings}", *device_note(results), "", f"Command: `{command}`", "",
             *sections]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if figure is not None:
        figures.save(figure, stem)
    return stem.with_suffix(".md")


# ----- what each experiment adds to its table ---------------------------------------------------------------

def device_note(results: list[dict]) -> list[str]:
    """A line naming the models whose runs trained off the CPU (config.json's --device), if any: their
    "train min" is that device's time, and the same seed repeats their numbers there, not on a CPU."""
    devices: dict[str, set[str]] = {}
    for r in results:
        config = trained_run(r) / "config.json"
        device = json.loads(config.read_text())["train_config"].get("device", "cpu") if config.exists() else "cpu"
        if device != "cpu":
            devices.setdefault(device, set()).add(r["label"])
    return [line for device, labels in devices.items() for line in (
        "", f"Trained with `--device {device}` (a GPU): {', '.join(sorted(labels))}; their train min is GPU time, "
            f"and a CPU rerun of the same seed gives other numbers (float rounding changes the training path).")]


def section_metrics(name, dataset, results, table, note, **_):
    from dimerec import figures

    lines = metric_lines(table)
    if "best baseline" in table:
        lines += ["", "★ best baseline by HR@50."]
    lines += ["", note] if note else []
    return lines, figures.metric_bars(table, f"{name} on {dataset}: test HR@50 and NDCG@50 (mean ± std)"), table


# Numbers the baselines' own papers or repositories report under the sampled protocol (each test user's last
# item among 100 unseen items), where our dataset is theirs: (model, dataset) -> (source, HR@10 %, NDCG@10 %).
SAMPLED_REFERENCES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("sasrec", "ml-1m"): ("SASRec: the paper (Kang & McAuley, ICDM 2018) reports HR@10 82.45 on ML-1M; the "
                          "pmixer/SASRec.pytorch README two test runs (1,000 epochs, max length 200)",
                          "82.45 (paper); 81.90, 82.25 (pmixer)", "58.97, 59.18 (pmixer)"),
}


def section_table1(name, dataset, results, table, note, *, data_dir=None, **kwargs):
    """Table 1, then each model under the sampled protocol beside what its own paper reports (a sanity check)."""
    from dimerec.evaluate import sampled_metrics

    lines, figure, csv_table = section_metrics(name, dataset, results, table, note)
    rows, diffusion_steps = [], {}
    for r in tqdm(results, desc="sampled-100 check", unit="run"):
        model, data, config = load_run_cached(trained_run(r), data_dir, r.get("serve_overrides"))
        if "T" in config["model_config"]:
            diffusion_steps.setdefault(r["label"], (r["model"], set()))[1].add(config["model_config"]["T"])
        test = data.split(config["train_config"]["split_seed"]).test
        got = sampled_metrics(model, data, test, 100, seed=r["seed"])
        rows.append({"model": r["label"], "kind": r["model"], "HR@10": 100 * got["HR@10"],
                     "NDCG@10": 100 * got["NDCG@10"]})
    per_run = pd.DataFrame(rows)
    check = per_run.groupby("model", sort=False).agg(kind=("kind", "first"), hr=("HR@10", "mean"),
                                                     ndcg=("NDCG@10", "mean")).reset_index()
    shown = pd.DataFrame({"model": check["model"], "sampled HR@10": check["hr"], "sampled NDCG@10": check["ndcg"],
                          "reported HR@10": [SAMPLED_REFERENCES.get((k, dataset), ("", "—", "—"))[1]
                                             for k in check["kind"]],
                          "reported NDCG@10": [SAMPLED_REFERENCES.get((k, dataset), ("", "—", "—"))[2]
                                               for k in check["kind"]]})
    sources = sorted({SAMPLED_REFERENCES[(k, dataset)][0] for k in check["kind"] if (k, dataset) in SAMPLED_REFERENCES})
    if diffusion_steps:
        from dimerec.models import MODELS

        def help_of(kind: str) -> str:
            return next(f.metadata["help"] for f in fields(MODELS[kind].Config) if f.name == "T")

        lines += ["", "Diffusion steps T (`--T`), with each module's own note on it: " + "; ".join(
            f"{label} {'/'.join(map(str, sorted(steps)))} ({help_of(kind)})"
            for label, (kind, steps) in diffusion_steps.items()) + "."]
    lines += ["", "## Sanity check: the sampled protocol of the baselines' own papers", "",
              "Each test user's last item ranked among 100 items the user never interacted with "
              "(`python -m dimerec evaluate RUN --sampled-negatives 100`), mean over seeds, in %; far kinder than the "
              "full ranking above. The reported columns are filled only where the source used this dataset and "
              "protocol; it trained far longer than this table's budget, and on every user's earlier items "
              "(leave-one-out), "
              "where our test users are held out of training.", "", *markdown_table(shown), ""]
    lines += [f"Source: {source}." for source in sources] or ["No baseline reports numbers on this dataset under "
                                                             "this protocol."]
    return lines, figure, csv_table


def section_table2(name, dataset, results, table, note, *, data_dir=None, max_rows=None, **_):
    """Linear probing of each model's item table and distinct categories in its users' top 100 (test users)."""
    from dimerec import figures
    from dimerec.analysis import category_diversity

    probes = probe_runs(results, data_dir)
    if probes["probe accuracy"].isna().all():
        raise DimeRecError(f"{dataset} has no item categories: Table 2 needs them (ml-1m genres, planted)")
    rows = []
    for r in tqdm(results, desc="top-100 categories", unit="run"):
        model, data, config = load_run_cached(trained_run(r), data_dir, r.get("serve_overrides"))
        split = data.split(config["train_config"]["split_seed"])
        diversity = category_diversity(model, data, split.test, k=100, protocol=r["protocol"], seed=r["seed"],
                                       max_rows=max_rows)
        rows.append({"model": r["label"], "categories in top 100": diversity["mean"],
                     "counting": diversity["counting"]})
    per_run = pd.DataFrame(rows)
    agg = per_run.groupby("model", sort=False)["categories in top 100"].agg(["mean", "std"]).fillna(0.0)
    summary = probes.merge(agg.rename(columns={"mean": "categories in top 100", "std": "categories in top 100 std"}),
                           left_on="model", right_index=True)
    shown = pd.DataFrame({"model": summary["model"]})
    for key in ("probe accuracy", "categories in top 100"):
        shown[key] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(summary[key], summary[f"{key} std"])]
    lines = ["Linear probing: logistic regression on the frozen item table, 5-fold stratified cross-validation; "
             f"majority-class floor {summary['majority floor'].iloc[0]:.2f}%. Labels: {probes['labelling'].iloc[0]}. "
             f"Diversity: {rows[0]['counting']}; test users"
             f"{f', {max_rows} sampled rows' if max_rows else ''}, top 100.", "", *markdown_table(shown),
             "", "Test metrics of the same runs:", "", *metric_lines(table)]
    figure = figures.table2_bars(summary, f"{name} on {dataset}: item-embedding probing and top-100 diversity")
    return lines, figure, summary.drop(columns=["labelling"]).merge(table, on="model")


def section_fig4(name, dataset, results, table, note, **_):
    from dimerec import figures

    curves = {r["label"]: pd.read_csv(trained_run(r) / "losses.csv")
              for r in results if r["seed"] == results[0]["seed"]}
    lines = [f"Loss curves of seed {results[0]['seed']} (figure: `{name}_{dataset}.html`, a rolling mean over "
             "100 steps); the table gives each curve's mean over its first and last 10% of steps.", ""]
    rows = []
    for label, frame in curves.items():
        n = max(1, len(frame) // 10)
        for term in ("L_gem", "L_recon", "L_ssm"):
            smooth = frame[term].rolling(n, min_periods=1).mean()
            rows.append({"run": label, "loss": term, "first 10%": float(frame[term].head(n).mean()),
                         "lowest 10% window": float(smooth.iloc[n - 1:].min()),
                         "last 10%": float(frame[term].tail(n).mean()), "steps": len(frame)})
    summary = pd.DataFrame(rows)
    summary["rise from lowest (%)"] = 100 * (summary["last 10%"] / summary["lowest 10% window"] - 1)
    lines += markdown_table(summary, "{:.4f}")
    lines += ["", *metric_lines(table)]
    return lines, figures.loss_curves(curves, f"Fig. 4 on {dataset}: losses with and without GRW"), summary


def section_fig5(name, dataset, results, table, note, **_):
    from dimerec import figures

    rows = []
    for r in results:
        steps = json.loads((trained_run(r) / "step_metrics.json").read_text())
        for s in steps["steps"]:
            rows.append({"model": r["label"], "seed": r["seed"], "step": s["step"], "t": s["t"],
                         "HR@50": 100 * s["HR@50"], "NDCG@50": 100 * s["NDCG@50"]})
    per_step = pd.DataFrame(rows)
    curve = per_step.groupby(["model", "step", "t"], sort=False)[["HR@50", "NDCG@50"]].agg(["mean", "std"])
    curve.columns = [f"{a} {b}" for a, b in curve.columns]
    curve = curve.reset_index().fillna(0.0)
    wide = curve.pivot(index=["step", "t"], columns="model", values="HR@50 mean").reset_index()
    lines = ["HR@50 (%) of x̂0 predicted at each reverse step (step 1 starts from x_T), validation users, mean over "
             "seeds; the paper's Fig. 5 shows it rising along the chain.", "", *markdown_table(wide),
             "", "Final test metrics of the same runs:", "", *metric_lines(table)]
    return lines, figures.step_curves(curve, f"Fig. 5 on {dataset}: HR@50 of x̂0 along the reverse chain"), curve


def section_table4(name, dataset, results, table, note, *, data_dir=None, **_):
    """Table 4's metrics, and Fig. 3: linear probing of every run's item table (as in Table 2)."""
    from dimerec import figures

    probes = probe_runs(results, data_dir)
    table = table.merge(probes, on="model", how="left")
    lines = metric_lines(table)
    if probes["probe accuracy"].notna().any():
        lines += ["", "Fig. 3: linear-probe accuracy (%) of each run's item table on the item categories "
                  f"({probes['labelling'].iloc[0]}), mean over seeds; the paper's variants 1-4 are "
                  "'w/o L_gem' and the three 'Fig. 3 variant' rows.", "",
                  *markdown_table(table[["model", "probe accuracy", "probe accuracy std"]])]
    figure = figures.probe_bars(table, f"Fig. 3 on {dataset}: linear probing after ablations") \
        if probes["probe accuracy"].notna().any() else figures.metric_bars(table, f"{name} on {dataset}")
    return lines, figure, table.drop(columns=["labelling", "majority floor"])


def probe_runs(results, data_dir) -> pd.DataFrame:
    """Linear-probe accuracy of each run's item table, mean and std over seeds, per row label."""
    from dimerec.analysis import linear_probe

    rows = []
    for r in tqdm(results, desc="probing", unit="run"):
        model, data, _ = load_run_cached(trained_run(r), data_dir)
        if not any(data.item_categories):
            rows.append({"model": r["label"], "probe accuracy": np.nan, "majority floor": np.nan,
                         "labelling": "no item categories"})
            continue
        probe = linear_probe(model.item_vectors().detach(), data, seed=r["seed"])
        rows.append({"model": r["label"], "probe accuracy": 100 * probe["accuracy"],
                     "majority floor": 100 * probe["majority_accuracy"], "labelling": probe["labels"]})
    frame = pd.DataFrame(rows)
    agg = frame.groupby("model", sort=False).agg(
        **{"probe accuracy": ("probe accuracy", "mean"), "probe accuracy std": ("probe accuracy", "std"),
           "majority floor": ("majority floor", "first"), "labelling": ("labelling", "first")}).reset_index()
    agg["probe accuracy std"] = agg["probe accuracy std"].fillna(0.0)
    return agg


def section_diffusion(name, dataset, results, table, note, *, data_dir=None, **_):
    """Issue 16: one table per hypothesis (validation HR@50 chooses; test read once per run), every variant's
    curve of x̂0 along its chain, its serving cost, the verdict against the control, and the chain's angles."""
    from scipy import stats

    from dimerec import figures
    from dimerec.analysis import chain_angles, serving_cost
    from dimerec.evaluate import step_metrics

    frame = pd.DataFrame(results)
    curves, costs = [], {}
    for r in tqdm(results, desc="chains and serving cost", unit="run"):
        model, data, config = load_run_cached(trained_run(r), data_dir, r.get("serve_overrides"))
        split, tc = data.split(config["train_config"]["split_seed"]), config["train_config"]
        if model.denoises and model.config.serve == "final":
            steps = step_metrics(model, data, split.valid, tc["protocol"], mask_seen=tc["mask_seen"],
                                 seed=r["seed"], max_rows=tc.get("valid_max_rows"))["steps"]
            curves += [{"model": r["label"], "seed": r["seed"], "step": s["step"], "t": s["t"],
                        "HR@50": 100 * s["HR@50"], "NDCG@50": 100 * s["NDCG@50"]} for s in steps]
        if r["seed"] == 0:
            costs[r["label"]] = serving_cost(model, data, split.valid, seed=0)
    curve = pd.DataFrame(curves)
    by_model = curve.groupby(["model", "seed"]).agg(first=("HR@50", "first"), last=("HR@50", "last"))
    by_model["rise"] = by_model["last"] - by_model["first"]
    chain_rise = by_model.groupby("model")[["first", "last", "rise"]].mean()

    def cell(label: str, key: str) -> str:
        row = table[table.model == label].iloc[0]
        return f"{row[key]:.2f} ± {row[f'{key} std']:.2f}"

    valid = {label: 100 * np.mean([v["HR@50"] for v in g["valid"]]) for label, g in frame.groupby("label")}
    lines = ["Each row: test metrics in %, mean ± std over seeds; **valid HR@50** (the only figure anything is "
             "chosen by); the chain's first and last step (HR@50 of x̂0 on validation, mean over seeds; "
             "x̂0 after the first step from pure noise vs after the last); serving cost in ms per user (batch "
             "1,024, seed 0, this machine)."]
    for group, specs in DIFFUSION_GROUPS.items():
        rows = []
        for spec in specs:
            if spec.label not in valid:
                continue
            rise = chain_rise.loc[spec.label] if spec.label in chain_rise.index else None
            rows.append({"variant": spec.label, "valid HR@50": f"{valid[spec.label]:.2f}",
                         "test HR@50": cell(spec.label, "HR@50"), "test NDCG@50": cell(spec.label, "NDCG@50"),
                         "chain: first step": "—" if rise is None else f"{rise['first']:.2f}",
                         "last step": "—" if rise is None else f"{rise['last']:.2f}",
                         "ms / user": f"{costs.get(spec.label, float('nan')):.3f}"})
        lines += ["", f"## {group}", "", *markdown_table(pd.DataFrame(rows))]
    # the verdict: the chain-served variant that validates best, against the control, on test
    chain_served = [s.label for g in list(DIFFUSION_GROUPS.values())[1:] for s in g if s.label in valid]
    chain_served.append(OURS.label)
    best = max(chain_served, key=lambda label: valid[label])
    verdict = ["## Verdict", "", f"Best chain-served variant on validation: **{best}** (valid HR@50 "
               f"{valid[best]:.2f}; the control validates at {valid.get(CONTROL.label, float('nan')):.2f})."]
    a = frame[frame.label == best].sort_values("seed")
    b = frame[frame.label == CONTROL.label].sort_values("seed")
    seeds = sorted(set(a.seed) & set(b.seed))
    beats = []
    for key in ("HR@50", "NDCG@50"):
        x = [t[key] for t in a[a.seed.isin(seeds)]["test"]]
        y = [t[key] for t in b[b.seed.isin(seeds)]["test"]]
        beats.append(np.mean(x) >= np.mean(y))
        p = stats.ttest_rel(x, y).pvalue if len(seeds) >= 2 else float("nan")
        verdict.append(f"- test {key}: {100 * np.mean(x):.2f} vs the control's {100 * np.mean(y):.2f} "
                       f"({100 * (np.mean(x) - np.mean(y)):+.2f} points, paired t-test over {len(seeds)} seeds, "
                       f"p = {p:.3g}): {'matches or beats' if np.mean(x) >= np.mean(y) else 'below'} the control.")
    if best in chain_rise.index:
        r = chain_rise.loc[best]
        verdict.append(f"- its chain: HR@50 of x̂0 {r['first']:.2f} after the first step, {r['last']:.2f} after the "
                       f"last: the chain {'improves (as Fig. 5 claims)' if r['rise'] >= 0 else 'degrades'} "
                       f"along the way.")
    cleared = best in chain_rise.index and chain_rise.loc[best, "rise"] >= 0 and all(beats)
    verdict.append(f"- the bar of issue 16 (a chain that improves and matches the control on HR@50 and NDCG@50): "
                   f"**{'cleared' if cleared else 'not cleared'}**.")
    lines += ["", *verdict]
    # H6: where the chain's guesses land (seed 0, DimeRec as served by default)
    source = next(r for r in results if r["label"] == OURS.label and r["seed"] == results[0]["seed"])
    model, data, config = load_run_cached(trained_run(source), data_dir)
    angles = pd.DataFrame(chain_angles(model, data, data.split(config["train_config"]["split_seed"]).valid,
                                       seed=source["seed"]))
    lines += ["", "## H6: where the chain's guesses land (DimeRec (ours), seed "
              f"{source['seed']}, 8 samples per validation row, at most 2,000 rows; degrees)", "",
              "A uniformly random direction lies at about 90° from the target. Each sample farther from the "
              "target than the samples' mean is a distribution too broad for one sample to rank well.", "",
              *markdown_table(angles, "{:.1f}")]
    curve_mean = curve.groupby(["model", "step", "t"], sort=False)[["HR@50", "NDCG@50"]].agg(["mean", "std"])
    curve_mean.columns = [f"{a} {b}" for a, b in curve_mean.columns]
    curve_mean = curve_mean.reset_index().fillna(0.0)
    chained = {group: [s.label for s in specs if s.label in set(curve_mean["model"])]
               for group, specs in DIFFUSION_GROUPS.items()}
    chained = {group: labels for group, labels in chained.items() if labels}
    references = {label: valid[label] for label in (CONTROL.label, SERVE_MEAN.label, POP.label) if label in valid}
    figure = figures.chain_panels(curve_mean, chained, references,
                                  f"Reverse chains on {dataset}: HR@50 of x̂0 at each step t (validation, mean of "
                                  f"seeds); dotted: validation HR@50 of the references")
    csv_table = table.assign(**{"valid HR@50": [valid[m] for m in table.model],
                                "ms per user": [costs.get(m, np.nan) for m in table.model],
                                "chain first": [chain_rise["first"].get(m, np.nan) for m in table.model],
                                "chain last": [chain_rise["last"].get(m, np.nan) for m in table.model]})
    return lines, figure, csv_table


SECTIONS = {"table1": section_table1, "table2": section_table2, "table4": section_table4, "fig4": section_fig4,
            "fig5": section_fig5, "diffusion": section_diffusion}


def reproduce(name: str, dataset: str, seeds: int, *, data_dir: str | None, max_minutes: float,
              max_steps: int | None = None, final_max_rows: int | None = None, root: Path = Path("runs/reproduce"),
              out_dir: Path = Path("results"),
              extra_flags: list[str] | None = None, tune_grid: bool = False,
              tune_minutes: float | None = None, analysis_rows: int | None = None,
              command: str | None = None, skip_models: tuple[str, ...] = (), device: str = "cpu") -> Path:
    from dimerec.trainer import check_device

    if name not in EXPERIMENTS:
        raise DimeRecError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    check_device(device)  # before any run starts
    _LOADED.clear()
    known = sorted({spec.model for spec in EXPERIMENTS[name]})
    unknown = [m for m in skip_models if m not in known]
    if unknown:  # a misspelt name would otherwise train the model it meant to skip
        raise DimeRecError(f"--skip-models: {', '.join(map(repr, unknown))}: no such model in {name}; "
                           f"its models are {', '.join(known)}")
    skipped = [spec.label for spec in EXPERIMENTS[name] if spec.model in skip_models]
    specs = [spec for spec in EXPERIMENTS[name] if spec.model not in skip_models]
    extra_flags = [*(extra_flags or []), *(["--device", device] if device != "cpu" else [])]
    chosen, reuse, sections = {}, {}, []
    if skipped:
        sections = [f"Not run (`--skip-models`): {', '.join(skipped)}.", ""]
    budget = Budget(max_minutes, max_steps, final_max_rows)
    if tune_grid:
        tune_budget = Budget(tune_minutes or max_minutes, max_steps, final_max_rows)
        chosen, trials = tune(specs, dataset, data_dir=data_dir, root=root / "tuned", budget=tune_budget,
                              extra_flags=extra_flags)
        if tune_budget == budget:
            reuse = {spec.label: tuning_run(root / "tuned", dataset, spec, chosen[spec.label])
                     for spec in specs if spec.label in chosen}
        root = root / "tuned"
        sections += ["## Tuning (validation HR@50, seed 0, no test read)", "", *markdown_table(trials), ""]
        out_dir.mkdir(parents=True, exist_ok=True)
        trials.to_csv(out_dir / f"{name}_{dataset}_tuning.csv", index=False)
    results = run_all(specs, dataset, list(range(seeds)), data_dir=data_dir, root=root, budget=budget,
                      extra_flags=extra_flags, chosen=chosen, reuse=reuse, device=device)
    table, note = summarize(results)
    section = SECTIONS.get(name, section_metrics)
    lines, figure, csv_table = section(name, dataset, results, table, note, data_dir=data_dir,
                                       max_rows=analysis_rows)
    command = command or f"python -m dimerec reproduce {name} --dataset {dataset} --seeds {seeds} " + \
        " ".join(budget.flags())
    return write_outputs(name, dataset, results, csv_table, [*lines, "", *sections], figure, out_dir, command,
                         budget, tuned=tune_grid)
